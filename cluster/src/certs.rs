//! `labelfleet certs`: a cluster CA and one certificate per role, for local use and for the
//! Helm chart's Secrets. Keys are ECDSA P-256, made with ring; key files are written 0600.

use crate::security::{Role, SecurityError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// One certificate to make: a role, optionally bound to one name (a worker id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    pub role: Role,
    pub name: Option<String>,
}

impl CertRequest {
    /// Parses `worker` or `worker/w-1`.
    pub fn parse(spec: &str) -> Result<CertRequest, SecurityError> {
        let (role, name) = match spec.split_once('/') {
            Some((r, n)) => (r, Some(n)),
            None => (spec, None),
        };
        let role = Role::parse(role).ok_or_else(|| {
            SecurityError::Invalid(format!(
                "certificate `{spec}`: unknown role `{role}` (coordinator, worker, trainer, operator)"
            ))
        })?;
        if let Some(n) = name {
            crate::ids::check_id("certificate name", n).map_err(SecurityError::Invalid)?;
        }
        Ok(CertRequest {
            role,
            name: name.map(str::to_string),
        })
    }

    /// File stem: `worker`, or `worker-w-1` for a named one.
    pub fn stem(&self) -> String {
        match &self.name {
            Some(n) => format!("{}-{n}", self.role),
            None => self.role.to_string(),
        }
    }
}

/// What to make: the role certificates, and the names etcd's server certificate is valid for.
#[derive(Debug, Clone)]
pub struct CertPlan {
    pub certs: Vec<CertRequest>,
    pub etcd_names: Vec<String>,
    pub days: u32,
}

impl Default for CertPlan {
    fn default() -> Self {
        CertPlan {
            certs: Role::ALL
                .into_iter()
                .map(|role| CertRequest { role, name: None })
                .collect(),
            etcd_names: vec!["localhost".into(), "127.0.0.1".into()],
            days: 365,
        }
    }
}

fn gen_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Generate(e.to_string())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days as i64);
}

fn write(path: PathBuf, data: &str, private: bool) -> Result<PathBuf, SecurityError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = private;
    let mut f = opts.open(&path).map_err(|source| SecurityError::Write {
        path: path.clone(),
        source,
    })?;
    f.write_all(data.as_bytes())
        .map_err(|source| SecurityError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Writes `ca.pem`, `ca.key`, `<stem>.pem` and `<stem>.key` for each certificate, and
/// `etcd-server.pem`/`.key`, into `out`. Returns the files written. Refuses to overwrite an
/// existing CA key (a new CA would invalidate every certificate already handed out).
pub fn generate(out: &Path, plan: &CertPlan) -> Result<Vec<PathBuf>, SecurityError> {
    if out.join("ca.key").exists() {
        return Err(SecurityError::Invalid(format!(
            "`{}` already holds a CA key; remove it or choose another folder",
            out.join("ca.key").display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| SecurityError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "labelfleet cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, plan.days.max(1) * 2);
    let ca_cert = ca.self_signed(&ca_key).map_err(gen_err)?;
    let mut written = vec![
        write(out.join("ca.pem"), &ca_cert.pem(), false)?,
        write(out.join("ca.key"), &ca_key.serialize_pem(), true)?,
    ];
    let issuer = Issuer::new(ca, ca_key);
    for req in &plan.certs {
        let mut params = CertificateParams::new(vec![req.role.domain()]).map_err(gen_err)?;
        let uri = req.role.uri(req.name.as_deref());
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into().map_err(gen_err)?));
        params
            .distinguished_name
            .push(DnType::CommonName, req.stem());
        leaf(&mut params, plan.days);
        written.extend(sign(out, &req.stem(), params, &issuer)?);
    }
    let mut etcd = CertificateParams::new(plan.etcd_names.clone()).map_err(gen_err)?;
    etcd.distinguished_name.push(DnType::CommonName, "etcd");
    leaf(&mut etcd, plan.days);
    written.extend(sign(out, "etcd-server", etcd, &issuer)?);
    Ok(written)
}

fn leaf(params: &mut CertificateParams, days: u32) {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Every role both serves and dials (and etcd's peers are its clients too).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(params, days);
}

fn sign(
    out: &Path,
    stem: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<PathBuf>, SecurityError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
    Ok(vec![
        write(out.join(format!("{stem}.pem")), &cert.pem(), false)?,
        write(out.join(format!("{stem}.key")), &key.serialize_pem(), true)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::identity_of_der;

    #[test]
    fn every_role_certificate_names_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = CertPlan::default();
        plan.certs.push(CertRequest::parse("worker/w-7").unwrap());
        let files = generate(dir.path(), &plan).unwrap();
        assert_eq!(files.len(), 2 + 2 * plan.certs.len() + 2);
        for req in &plan.certs {
            let pem =
                std::fs::read_to_string(dir.path().join(format!("{}.pem", req.stem()))).unwrap();
            let der = pem_body(&pem);
            let peer = identity_of_der(&der).expect("a role URI SAN");
            assert_eq!(peer.role, req.role);
            assert_eq!(peer.name, req.name);
        }
        // the CA is not overwritten by a second run
        assert!(generate(dir.path(), &plan).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("worker.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn bad_certificate_specs_are_refused() {
        assert!(CertRequest::parse("admin").is_err());
        assert!(CertRequest::parse("worker/../x").is_err());
        assert_eq!(
            CertRequest::parse("trainer").unwrap().stem(),
            "trainer".to_string()
        );
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
