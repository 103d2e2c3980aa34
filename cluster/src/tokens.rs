//! Bearer tokens for the people and programs that use `JobService`.
//!
//! A token file (a Kubernetes Secret in the chart) holds each token's name, the SHA-256 of the
//! token, never the token itself, and its permissions. `labelfleet tokens add` makes a token,
//! prints it once and appends its hash. A client sends `authorization: Bearer <token>`.
//!
//! [`ClientAuth`] decides each call: a certificate of role coordinator (a corpus job's driver)
//! or operator may do everything; otherwise the bearer token must hold the call's permission.
//! A plaintext server without a token file lets every call through.

use crate::security::{peer_identity, Access, Role, SecurityError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Status};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Submit jobs and upload corpora.
    Submit,
    /// Read jobs, watch them, fetch results and artifacts.
    Read,
    /// Cancel jobs.
    Cancel,
    /// Everything.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Submit,
        Permission::Read,
        Permission::Cancel,
        Permission::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Submit => "submit",
            Permission::Read => "read",
            Permission::Cancel => "cancel",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// One token as the file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub permissions: Vec<Permission>,
}

impl TokenEntry {
    fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p) || self.permissions.contains(&Permission::Admin)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenFile {
    pub tokens: Vec<TokenEntry>,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenFile {
    pub fn read(path: &Path) -> Result<TokenFile, SecurityError> {
        let bytes = std::fs::read(path).map_err(|source| SecurityError::Read {
            what: "token file",
            path: path.to_path_buf(),
            source,
        })?;
        let file: TokenFile = serde_json::from_slice(&bytes)
            .map_err(|e| SecurityError::Invalid(format!("token file `{}`: {e}", path.display())))?;
        for (i, t) in file.tokens.iter().enumerate() {
            crate::ids::check_id(&format!("tokens[{i}].name"), &t.name)
                .map_err(SecurityError::Invalid)?;
            if t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
                return Err(SecurityError::Invalid(format!(
                    "token file `{}`: tokens[{i}] (`{}`).sha256: not 64 hex digits",
                    path.display(),
                    t.name
                )));
            }
        }
        Ok(file)
    }

    /// Makes a token named `name`, appends its hash to the file at `path` (created 0600 when
    /// missing, replaced atomically) and returns the token, which is shown only this once.
    pub fn add(
        path: &Path,
        name: &str,
        permissions: Vec<Permission>,
    ) -> Result<String, SecurityError> {
        crate::ids::check_id("token name", name).map_err(SecurityError::Invalid)?;
        if permissions.is_empty() {
            return Err(SecurityError::Invalid(
                "a token needs at least one permission (submit, read, cancel, admin)".into(),
            ));
        }
        let mut file = match path.exists() {
            true => TokenFile::read(path)?,
            false => TokenFile::default(),
        };
        if file.tokens.iter().any(|t| t.name == name) {
            return Err(SecurityError::Invalid(format!(
                "token file `{}` already has a token named `{name}`",
                path.display()
            )));
        }
        let token = format!("lft_{}", hex::encode(rand::random::<[u8; 32]>()));
        file.tokens.push(TokenEntry {
            name: name.to_string(),
            sha256: digest(&token),
            permissions,
        });
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| SecurityError::Invalid(format!("token file: {e}")))?;
        write_private(path, &json)?;
        Ok(token)
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), SecurityError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let err = |source| SecurityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The tokens a coordinator accepts, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, TokenEntry>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, SecurityError> {
        let file = TokenFile::read(path)?;
        Ok(Tokens {
            by_hash: file
                .tokens
                .into_iter()
                .map(|t| (t.sha256.to_ascii_lowercase(), t))
                .collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn find(&self, token: &str) -> Option<&TokenEntry> {
        self.by_hash.get(&digest(token))
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer<T>(req: &Request<T>) -> Option<&str> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Who made a `JobService` call, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A certificate of this role (coordinator or operator).
    Certificate(Role),
    /// The token of this name.
    Token(String),
    /// Nobody checked (a plaintext server without a token file).
    Anonymous,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Certificate(r) => write!(f, "certificate:{r}"),
            Caller::Token(n) => write!(f, "token:{n}"),
            Caller::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// How a coordinator decides its clients' calls.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    access: Access,
    tokens: Option<Arc<Tokens>>,
}

impl ClientAuth {
    pub fn new(access: Access, tokens: Option<Tokens>) -> ClientAuth {
        ClientAuth {
            access,
            tokens: tokens.map(Arc::new),
        }
    }

    /// Everyone may call (the embedded cluster, tests on loopback).
    pub fn open() -> ClientAuth {
        ClientAuth::new(Access::Open, None)
    }

    /// Allows `call` when the caller holds `needed`. UNAUTHENTICATED without a usable
    /// credential, PERMISSION_DENIED with one that lacks the permission.
    pub fn check<T>(
        &self,
        req: &Request<T>,
        call: &str,
        needed: Permission,
    ) -> Result<Caller, Status> {
        if self.access == Access::Verified {
            if let Some(peer) = peer_identity(req) {
                if matches!(peer.role, Role::Coordinator | Role::Operator) {
                    return Ok(Caller::Certificate(peer.role));
                }
            }
        }
        let Some(tokens) = &self.tokens else {
            return match self.access {
                Access::Open => Ok(Caller::Anonymous),
                Access::Verified => Err(Status::unauthenticated(format!(
                    "{call}: this coordinator has no token file; only operator and coordinator certificates may call it"
                ))),
            };
        };
        let Some(token) = bearer(req) else {
            return Err(Status::unauthenticated(format!(
                "{call}: no bearer token (pass --token or set LABELFLEET_TOKEN)"
            )));
        };
        let Some(entry) = tokens.find(token) else {
            return Err(Status::unauthenticated(format!(
                "{call}: the bearer token is not one this coordinator knows"
            )));
        };
        if !entry.allows(needed) {
            return Err(Status::permission_denied(format!(
                "{call}: token `{}` lacks the `{}` permission (it has: {})",
                entry.name,
                needed.as_str(),
                entry
                    .permissions
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Caller::Token(entry.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(token: &str) -> Request<()> {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }

    #[test]
    fn tokens_are_stored_hashed_and_checked_per_permission() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let reader = TokenFile::add(&path, "reader", vec![Permission::Read]).unwrap();
        let admin = TokenFile::add(&path, "ops", vec![Permission::Admin]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&reader) && !text.contains(&admin),
            "plain token stored"
        );
        assert!(TokenFile::add(&path, "ops", vec![Permission::Read]).is_err());

        let auth = ClientAuth::new(Access::Open, Some(Tokens::load(&path).unwrap()));
        let read = auth.check(&with_token(&reader), "GetJob", Permission::Read);
        assert_eq!(read.unwrap(), Caller::Token("reader".into()));
        let submit = auth
            .check(&with_token(&reader), "SubmitJob", Permission::Submit)
            .unwrap_err();
        assert_eq!(submit.code(), tonic::Code::PermissionDenied);
        assert!(
            submit.message().contains("`reader` lacks the `submit`"),
            "{}",
            submit.message()
        );
        assert!(auth
            .check(&with_token(&admin), "CancelJob", Permission::Cancel)
            .is_ok());
        let none = auth
            .check(&Request::new(()), "GetJob", Permission::Read)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let forged = auth
            .check(&with_token("lft_00"), "GetJob", Permission::Read)
            .unwrap_err();
        assert_eq!(forged.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_verified_server_without_tokens_refuses_anonymous_calls() {
        let auth = ClientAuth::new(Access::Verified, None);
        let err = auth
            .check(&Request::new(()), "ListJobs", Permission::Read)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(ClientAuth::open()
            .check(&Request::new(()), "ListJobs", Permission::Read)
            .is_ok());
    }
}
