//! Bulk data (corpora, task inputs, results, datasets, checkpoints) in an object store, named
//! by the `--store` URL of every role:
//!
//! - a plain path or `file:///abs/path`: a local (or shared) directory, created when missing;
//! - `s3://bucket/prefix`: Amazon S3 or any S3-compatible server;
//! - `gs://bucket/prefix`: Google Cloud Storage;
//! - `az://container/prefix`: Azure Blob Storage.
//!
//! Credentials, region and endpoint come from the backend's standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, ...; `GOOGLE_*`; `AZURE_*`). Query parameters override them:
//! `s3://bucket/prefix?endpoint=http://127.0.0.1:9000` (an `http://` endpoint allows plain
//! HTTP). Every key is relative to the prefix, so several deployments can share a bucket.
//!
//! The commit point of a task, [`Blobs::put_once`], is a conditional create on every backend:
//! `O_EXCL`-style on a directory, `If-None-Match: *` on S3 and Azure, `ifGenerationMatch=0`
//! on GCS.

use crate::error::{ClusterError, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::buffered::BufWriter;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store (None for a bucket).
    local: Option<PathBuf>,
    /// The store as given, with secrets in its query hidden: for logs and errors.
    display: String,
}

/// Whether a create-once write wrote the object or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Written,
    AlreadyExists,
}

/// The cloud backends a store URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// A parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local or shared directory.
    Local(PathBuf),
    /// A bucket (S3, GCS) or container (Azure), a key prefix inside it (no leading or trailing
    /// `/`; empty for the whole bucket), and backend options from the URL's query.
    Cloud {
        cloud: Cloud,
        bucket: String,
        prefix: String,
        options: Vec<(String, String)>,
    },
}

/// `value` with the values of secret-looking query options replaced by `***`.
pub fn redact(value: &str) -> String {
    let Some((base, query)) = value.split_once('?') else {
        return value.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "key", "password", "sas", "credential"]
        .iter()
        .any(|s| k.contains(s))
        && k != "access_key_id"
        && k != "aws_access_key_id"
}

impl StoreUrl {
    /// Parses a `--store` value. Errors are [`ClusterError::Invalid`] and name the value.
    pub fn parse(value: &str) -> Result<StoreUrl> {
        let bad =
            |why: String| ClusterError::Invalid(format!("--store `{}`: {why}", redact(value)));
        let s = value.trim();
        if s.is_empty() {
            return Err(bad(
                "empty: give a directory, or a URL such as s3://bucket/prefix".into(),
            ));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            // `s3:bucket` and the like are typos of a URL, not directory names.
            if let Some((scheme, _)) = s.split_once(':') {
                if matches!(
                    scheme.to_ascii_lowercase().as_str(),
                    "file" | "s3" | "s3a" | "gs" | "az" | "azure"
                ) {
                    return Err(bad(format!("malformed URL: expected `{scheme}://...`")));
                }
            }
            return Ok(StoreUrl::Local(PathBuf::from(s)));
        };
        let cloud = match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(bad(
                        "a file URL needs an absolute path: file:///path/to/store".into(),
                    ));
                }
                if path.contains('?') {
                    return Err(bad("a local store takes no options".into()));
                }
                return Ok(StoreUrl::Local(PathBuf::from(path)));
            }
            "s3" | "s3a" => Cloud::S3,
            "gs" => Cloud::Gcs,
            "az" | "azure" => Cloud::Azure,
            other => {
                return Err(bad(format!(
                    "unknown scheme `{other}`: use a directory, file://, s3://, gs:// or az://"
                )))
            }
        };
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        if location.contains('#') {
            return Err(bad("a store URL takes no fragment (`#...`)".into()));
        }
        let (bucket, path) = location.split_once('/').unwrap_or((location, ""));
        let what = if cloud == Cloud::Azure {
            "container"
        } else {
            "bucket"
        };
        if bucket.is_empty() {
            return Err(bad(format!("no {what}: expected {scheme}://{what}/prefix")));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(bad(format!(
                "`{bucket}` is not a valid {what} name (letters, digits, `-`, `.`, `_`)"
            )));
        }
        let mut segments = Vec::new();
        for seg in path.split('/').filter(|p| !p.is_empty()) {
            if seg == "." || seg == ".." {
                return Err(bad(format!("the prefix may not contain `{seg}`")));
            }
            segments.push(seg);
        }
        let mut options = Vec::new();
        for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    options.push((k.to_string(), v.to_string()))
                }
                _ => return Err(bad(format!("option `{kv}`: expected key=value"))),
            }
        }
        Ok(StoreUrl::Cloud {
            cloud,
            bucket: bucket.to_string(),
            prefix: segments.join("/"),
            options,
        })
    }

    /// The directory of a local store.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreUrl::Local(p) => Some(p),
            StoreUrl::Cloud { .. } => None,
        }
    }
}

/// The directory of a local `--store` value (None for a bucket or a value that does not parse).
pub fn local_dir(value: &str) -> Option<PathBuf> {
    StoreUrl::parse(value).ok()?.local_dir().map(PathBuf::from)
}

/// `value` with `endpoint=ENDPOINT` added to its query (for a `--store-endpoint` flag); a
/// local store is returned as it is.
pub fn with_endpoint(value: &str, endpoint: Option<&str>) -> String {
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) if local_dir(value).is_none() => {
            let sep = if value.contains('?') { '&' } else { '?' };
            format!("{value}{sep}endpoint={e}")
        }
        _ => value.to_string(),
    }
}

/// Installs ring as rustls' process-wide crypto provider (the HTTP client of the cloud
/// backends is built without one, so no C crypto library is compiled); a no-op after the first.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Blobs {
    /// A store rooted at a local directory (created when missing). Writes are durable when
    /// they return, as on a bucket: every put (`put`, `put_once`, `put_file`, `rename`) writes
    /// a staging file, fsyncs it, moves it into place and fsyncs the directories it created
    /// or changed, so a result the leader marks done in etcd survives a crash of the machine.
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Blobs {
            store: Arc::new(LocalFileSystem::new_with_prefix(root)?.with_fsync(true)),
            local: Some(root.to_path_buf()),
            display: root.display().to_string(),
        })
    }

    /// Opens the store a `--store` value names (see the module docs). Nothing is contacted:
    /// a wrong bucket or credentials show at the first request.
    pub fn open(value: &str) -> Result<Self> {
        let bad =
            |why: String| ClusterError::Invalid(format!("--store `{}`: {why}", redact(value)));
        let (cloud, bucket, prefix, options) = match StoreUrl::parse(value)? {
            StoreUrl::Local(dir) => return Blobs::local(&dir),
            StoreUrl::Cloud {
                cloud,
                bucket,
                prefix,
                options,
            } => (cloud, bucket, prefix, options),
        };
        install_crypto_provider();
        let unknown = |k: &str| bad(format!("unknown option `{k}` for this backend"));
        let http_endpoint = options
            .iter()
            .any(|(k, v)| k.to_ascii_lowercase().contains("endpoint") && v.starts_with("http://"));
        let store: Arc<dyn ObjectStore> = match cloud {
            Cloud::S3 => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                for (k, v) in &options {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                if http_endpoint {
                    b = b.with_allow_http(true);
                }
                // Create-once is `If-None-Match: *` (whatever AWS_CONDITIONAL_PUT says).
                let s = b
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                prefixed(s, &prefix)
            }
            Cloud::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket);
                for (k, v) in &options {
                    let key: GoogleConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                if http_endpoint {
                    b = b.with_client_options(
                        object_store::ClientOptions::new().with_allow_http(true),
                    );
                }
                prefixed(b.build().map_err(|e| bad(e.to_string()))?, &prefix)
            }
            Cloud::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&bucket);
                for (k, v) in &options {
                    let key: AzureConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                if http_endpoint {
                    b = b.with_allow_http(true);
                }
                prefixed(b.build().map_err(|e| bad(e.to_string()))?, &prefix)
            }
        };
        Ok(Blobs {
            store,
            local: None,
            display: redact(value),
        })
    }

    /// The directory of a local store; None for a bucket.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        self.store
            .put(&Path::from(key), PutPayload::from(data))
            .await?;
        Ok(())
    }

    /// Writes `key` only if no object is there: the commit point of a task's results, so two
    /// attempts can never both be recorded.
    pub async fn put_once(&self, key: &str, data: Vec<u8>) -> Result<Created> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(key), PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(Created::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Deletes object `key` (no error when there is none).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves an object (a server-side copy, then a delete of the source).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.store
            .rename(&Path::from(from), &Path::from(to))
            .await?;
        Ok(())
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys = self.list(prefix).await?;
        let n = keys.len();
        let locations = futures::stream::iter(keys.into_iter().map(|k| Ok(Path::from(k)))).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(n)
    }

    /// Streams object `key` into the file `dest` (its folder created when missing), through a
    /// temporary file renamed into place. Returns false, writing nothing, when there is no
    /// such object.
    pub async fn get_to_file(&self, key: &str, dest: &std::path::Path) -> Result<bool> {
        let result = match self.store.get(&Path::from(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let partial = partial_path(dest);
        let written: Result<()> = async {
            let mut file = tokio::fs::File::create(&partial).await?;
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk?).await?;
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest).await?;
        if let Some(dir) = dest.parent() {
            // the rename itself is durable only once its folder is
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        Ok(true)
    }

    /// Streams the local file `src` into object `key` (a multipart upload past 10 MiB, so a
    /// large file is never held in memory whole). The object appears only once complete.
    pub async fn put_file(&self, key: &str, src: &std::path::Path) -> Result<()> {
        let mut file = tokio::fs::File::open(src).await?;
        let mut writer = BufWriter::new(self.store.clone(), Path::from(key));
        let copied = async {
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Uploads every regular file under the local folder `dir` to `prefix/<relative path>`;
    /// returns the keys written, sorted.
    pub async fn put_dir(&self, prefix: &str, dir: &std::path::Path) -> Result<Vec<String>> {
        let prefix = prefix.trim_end_matches('/');
        let mut keys = Vec::new();
        for rel in files_under(dir)? {
            let key = format!("{prefix}/{rel}");
            self.put_file(&key, &dir.join(&rel)).await?;
            keys.push(key);
        }
        keys.sort();
        Ok(keys)
    }

    /// Downloads every object under `prefix` into the local folder `dest`, at its key relative
    /// to the prefix; returns how many. `dest` is created even when there are none.
    pub async fn get_dir(&self, prefix: &str, dest: &std::path::Path) -> Result<usize> {
        let prefix = prefix.trim_end_matches('/');
        tokio::fs::create_dir_all(dest).await?;
        let keys = self.list(prefix).await?;
        for key in &keys {
            let rel = key
                .strip_prefix(prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(key);
            if rel.is_empty() || rel.split('/').any(|s| s == "..") {
                continue;
            }
            if !self.get_to_file(key, &dest.join(rel)).await? {
                return Err(ClusterError::Invalid(format!(
                    "`{key}` vanished from the object store while it was downloaded"
                )));
            }
        }
        Ok(keys.len())
    }
}

impl std::fmt::Display for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

fn prefixed<T: ObjectStore>(store: T, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// `dest` with `.partial` added to its file name.
fn partial_path(dest: &std::path::Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Paths of the regular files under `dir`, relative to it, with `/` separators, sorted.
fn files_under(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(v: &str) -> (Cloud, String, String, Vec<(String, String)>) {
        match StoreUrl::parse(v).unwrap() {
            StoreUrl::Cloud {
                cloud,
                bucket,
                prefix,
                options,
            } => (cloud, bucket, prefix, options),
            other => panic!("{v}: {other:?}"),
        }
    }

    fn invalid(v: &str) -> String {
        match StoreUrl::parse(v) {
            Err(ClusterError::Invalid(m)) => m,
            other => panic!("{v}: expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        for (v, dir) in [
            ("labelfleet-data", "labelfleet-data"),
            ("/data", "/data"),
            ("./out/run/cluster", "./out/run/cluster"),
            (" /data ", "/data"),
            ("file:///data/store", "/data/store"),
            ("file://localhost/data", "/data"),
            ("FILE:///x", "/x"),
        ] {
            assert_eq!(
                StoreUrl::parse(v).unwrap(),
                StoreUrl::Local(dir.into()),
                "{v}"
            );
            assert_eq!(local_dir(v), Some(PathBuf::from(dir)));
        }
    }

    #[test]
    fn bucket_urls_give_the_bucket_and_a_normalised_prefix() {
        assert_eq!(cloud("s3://b"), (Cloud::S3, "b".into(), "".into(), vec![]));
        assert_eq!(cloud("s3://b/"), (Cloud::S3, "b".into(), "".into(), vec![]));
        assert_eq!(
            cloud("s3://my-bucket/a/b/"),
            (Cloud::S3, "my-bucket".into(), "a/b".into(), vec![])
        );
        assert_eq!(cloud("s3a://b//x//y").2, "x/y");
        assert_eq!(cloud("gs://bkt.example/p").0, Cloud::Gcs);
        assert_eq!(cloud("gs://bkt.example/p").2, "p");
        assert_eq!(cloud("az://container/deep/prefix").0, Cloud::Azure);
        assert_eq!(cloud("azure://container/deep/prefix").1, "container");
        assert_eq!(local_dir("s3://b/p"), None);
        let (_, _, prefix, opts) =
            cloud("s3://b/p?endpoint=http://127.0.0.1:9000&region=eu-west-1");
        assert_eq!(prefix, "p");
        assert_eq!(
            opts,
            vec![
                ("endpoint".into(), "http://127.0.0.1:9000".into()),
                ("region".into(), "eu-west-1".into())
            ]
        );
    }

    #[test]
    fn malformed_values_are_refused_naming_the_value() {
        for (v, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("ftp://host/x", "unknown scheme `ftp`"),
            ("http://host/x", "unknown scheme `http`"),
            ("s3://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            ("az:///p", "no container"),
            ("s3:bucket/p", "malformed URL"),
            ("gs:/bucket", "malformed URL"),
            ("s3://bu cket/p", "not a valid bucket name"),
            ("abfs://c@acct.dfs.core.windows.net/p", "unknown scheme"),
            ("s3://b/a/../c", "may not contain `..`"),
            ("s3://b/p?endpoint", "expected key=value"),
            ("s3://b/p#frag", "no fragment"),
            ("file://relative/dir", "absolute path"),
            ("file:///d?x=1", "no options"),
        ] {
            let m = invalid(v);
            assert!(m.contains(says), "{v}: {m}");
            assert!(m.starts_with("--store `"), "{v}: {m}");
        }
        // Secrets in the query are not echoed.
        let m = invalid("s3://b/a/../c?secret_access_key=hunter2&region=x");
        assert!(!m.contains("hunter2") && m.contains("region=x"), "{m}");
    }

    #[test]
    fn open_refuses_unknown_options_and_schemes_with_a_typed_error() {
        for v in ["s3://b/p?no_such_option=1", "ftp://x/y", "gs:bucket"] {
            match Blobs::open(v) {
                Err(ClusterError::Invalid(m)) => assert!(m.contains("--store"), "{m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_endpoint_flag_goes_into_the_query_of_a_bucket_only() {
        assert_eq!(
            with_endpoint("s3://b/p", Some("http://h:1")),
            "s3://b/p?endpoint=http://h:1"
        );
        assert_eq!(
            with_endpoint("s3://b/p?region=r", Some("http://h:1")),
            "s3://b/p?region=r&endpoint=http://h:1"
        );
        assert_eq!(with_endpoint("/data", Some("http://h:1")), "/data");
        assert_eq!(with_endpoint("s3://b", None), "s3://b");
    }

    #[tokio::test]
    async fn a_bucket_opens_without_contacting_it() {
        let b = Blobs::open(
            "s3://bucket/pre/fix?endpoint=http://127.0.0.1:9&access_key_id=a&secret_access_key=s",
        )
        .unwrap();
        assert!(b.local_dir().is_none());
        assert!(b.to_string().ends_with("secret_access_key=***"), "{b}");
    }

    #[tokio::test]
    async fn local_store_round_trips_files_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("file://{}", tmp.path().join("store").display());
        let blobs = Blobs::open(&url).unwrap();
        assert_eq!(blobs.local_dir(), Some(tmp.path().join("store").as_path()));
        assert_eq!(
            blobs.put_once("a/x", b"1".to_vec()).await.unwrap(),
            Created::Written
        );
        assert_eq!(
            blobs.put_once("a/x", b"2".to_vec()).await.unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(blobs.get("a/x").await.unwrap().unwrap().as_ref(), b"1");
        // a folder up and down again
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("config.json"), "{}").unwrap();
        std::fs::write(src.join("sub/w.bin"), vec![7u8; 3000]).unwrap();
        let keys = blobs.put_dir("checkpoints/c1/", &src).await.unwrap();
        assert_eq!(
            keys,
            vec!["checkpoints/c1/config.json", "checkpoints/c1/sub/w.bin"]
        );
        assert!(tmp.path().join("store/checkpoints/c1/sub/w.bin").is_file());
        let back = tmp.path().join("back");
        assert_eq!(blobs.get_dir("checkpoints/c1", &back).await.unwrap(), 2);
        assert_eq!(
            std::fs::read(back.join("sub/w.bin")).unwrap(),
            vec![7u8; 3000]
        );
        assert!(!blobs.get_to_file("nope", &back.join("n")).await.unwrap());
        assert!(!back.join("n").exists());
        assert_eq!(blobs.delete_prefix("checkpoints/c1").await.unwrap(), 2);
        assert!(blobs.list("checkpoints").await.unwrap().is_empty());
    }

    /// A local store syncs what it writes (the etcd mark of a result relies on it), and a
    /// write leaves only the object in place: no staging file beside it.
    #[tokio::test]
    async fn local_writes_are_synced_and_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(&tmp.path().join("store")).unwrap();
        assert!(
            format!("{:?}", blobs.store).contains("fsync: true"),
            "{:?}",
            blobs.store
        );
        blobs.put("jobs/j/spec", b"s".to_vec()).await.unwrap();
        blobs.put("jobs/j/spec", b"s2".to_vec()).await.unwrap();
        assert_eq!(
            blobs
                .put_once("jobs/j/results/t0", b"r".to_vec())
                .await
                .unwrap(),
            Created::Written
        );
        let src = tmp.path().join("big");
        std::fs::write(&src, vec![1u8; 11 << 20]).unwrap();
        blobs.put_file("jobs/j/big", &src).await.unwrap();
        let mut names: Vec<String> = files_under(&tmp.path().join("store/jobs/j")).unwrap();
        names.sort();
        assert_eq!(names, vec!["big", "results/t0", "spec"]);
        assert_eq!(
            blobs.get("jobs/j/spec").await.unwrap().unwrap().as_ref(),
            b"s2"
        );
        assert_eq!(
            blobs.get("jobs/j/big").await.unwrap().unwrap().len(),
            11 << 20
        );
    }
}
