//! `portcullis keys create|list|revoke`: manages API keys in the configured store directly, so
//! keys can be handled without a running gateway (and without exposing the admin port).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{AuthShared, KeyError, KeyStore, NewKey};
use crate::store::StoreError;

/// What to do with keys.
#[derive(Debug, Clone)]
pub enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// Consumer id.
        consumer: String,
        /// Plan name.
        plan: Option<String>,
        /// Scopes.
        scopes: Vec<String>,
        /// `name=value` labels.
        labels: Vec<String>,
        /// Lifetime, e.g. "30d".
        ttl: Option<String>,
    },
    /// List a consumer's keys (never the keys themselves).
    List {
        /// Consumer id.
        consumer: String,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id.
        id: String,
    },
}

/// Why a keys command failed; the text is what `portcullis keys` prints after its name.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The config file failed to load or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config has no `[store]`, so its keys live inside the running gateway.
    #[error(
        "{}: has no [store]; keys of the in-process store live inside the running gateway: \
         declare them under [auth.api_key] keys or use its admin API (POST /keys)",
        file.display()
    )]
    NoStore {
        /// The config file.
        file: PathBuf,
    },
    /// The store (or another process-wide service) could not be set up.
    #[error(transparent)]
    Services(#[from] crate::store::StoreSetupError),
    /// The `[auth.api_key]` settings could not be used.
    #[error(transparent)]
    Snapshot(#[from] crate::proxy::snapshot::SnapshotError),
    /// The config has no `[auth.api_key]`.
    #[error("{}: has no [auth.api_key] section", file.display())]
    NoApiKeys {
        /// The config file.
        file: PathBuf,
    },
    /// The async runtime the command runs on could not start.
    #[error("cannot start a runtime: {source}")]
    AsyncRuntime {
        /// Why.
        source: std::io::Error,
    },
    /// The store did not answer a ping.
    #[error("cannot reach the store: {source}")]
    Unreachable {
        /// Why.
        source: StoreError,
    },
    /// A `--label` is not `name=value`.
    #[error("label {label:?} is not name=value")]
    Label {
        /// The label as given.
        label: String,
    },
    /// The key operation failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No key has this id.
    #[error("no key with id {id:?}")]
    UnknownId {
        /// The id as given.
        id: String,
    },
}

/// Runs a keys command against the store of the config at `path`; the text to print, or why not.
pub fn run(path: &Path, command: KeysCommand) -> Result<String, KeysError> {
    // Compiled as a start would (the snapshot over offline services), so a file `check`
    // refuses is refused here too, and the key settings are auth's compiled ones.
    let (process, snapshot) = match crate::setup::load_checked(path) {
        Ok(loaded) => loaded,
        Err(crate::proxy::snapshot::SnapshotError::Config(e)) => return Err(KeysError::Config(e)),
        Err(e) => return Err(e.into()),
    };
    let config = &snapshot.config;
    refuse_config_key(config, &command)?;
    if config.store.is_none() {
        return Err(KeysError::NoStore {
            file: path.to_path_buf(),
        });
    }
    let services = crate::setup::services(&process)?;
    let keys = snapshot
        .auth
        .keys()
        .map(|k| k.with_store(services.auth.store().clone()))
        .ok_or_else(|| KeysError::NoApiKeys {
            file: path.to_path_buf(),
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| KeysError::AsyncRuntime { source })?;
    runtime.block_on(async {
        services
            .auth
            .store()
            .ping(Duration::from_secs(3))
            .await
            .map_err(|source| KeysError::Unreachable { source })?;
        execute(&services.auth, &keys, command).await
    })
}

/// Refuses to revoke a key the config declares: the next start or reload would install it
/// again (the admin API refuses the same way).
fn refuse_config_key(
    config: &crate::config::Config,
    command: &KeysCommand,
) -> Result<(), KeysError> {
    let KeysCommand::Revoke { id } = command else {
        return Ok(());
    };
    let declared = config
        .auth
        .api_key
        .iter()
        .flat_map(|k| &k.keys)
        .any(|k| k.id == *id);
    if declared {
        return Err(KeyError::ConfigKey { id: id.clone() }.into());
    }
    Ok(())
}

/// Runs `command` on `keys`; revocations go through `auth`, the one place that revokes.
async fn execute(
    auth: &AuthShared,
    keys: &KeyStore,
    command: KeysCommand,
) -> Result<String, KeysError> {
    match command {
        KeysCommand::Create {
            consumer,
            plan,
            scopes,
            labels,
            ttl,
        } => {
            let (record, secret) = keys
                .create(NewKey {
                    consumer,
                    plan,
                    scopes,
                    labels: parse_labels(labels)?,
                    ttl,
                })
                .await?;
            Ok(serde_json::json!({"key": secret, "record": record}).to_string())
        }
        KeysCommand::List { consumer } => {
            let records = keys.list(&consumer).await?;
            Ok(serde_json::json!({"keys": records}).to_string())
        }
        KeysCommand::Revoke { id } => match auth.revoke_key(keys, &id).await? {
            true => Ok(serde_json::json!({"revoked": id}).to_string()),
            false => Err(KeysError::UnknownId { id }),
        },
    }
}

/// `name=value` labels as a map.
fn parse_labels(labels: Vec<String>) -> Result<BTreeMap<String, String>, KeysError> {
    let mut parsed = BTreeMap::new();
    for label in labels {
        let Some((k, v)) = label.split_once('=') else {
            return Err(KeysError::Label { label });
        };
        parsed.insert(k.to_string(), v.to_string());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_label_without_equals_is_refused_by_name() {
        let e = parse_labels(vec!["team=core".into(), "oncall".into()]).expect_err("refused");
        assert!(
            matches!(&e, KeysError::Label { label } if label == "oncall"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "label \"oncall\" is not name=value");
    }

    #[test]
    fn labels_become_a_map() {
        let parsed = parse_labels(vec!["team=core".into(), "tier=a=b".into()]).expect("parsed");
        assert_eq!(parsed.get("team").map(String::as_str), Some("core"));
        assert_eq!(parsed.get("tier").map(String::as_str), Some("a=b"));
    }

    #[test]
    fn revoking_a_config_declared_key_is_refused_naming_the_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("svc.key");
        std::fs::write(&key, "pc_declared-key-value-0123456789abcdef").expect("write key");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = [\"127.0.0.1:18080\"]\n\n\
                 [[upstreams]]\nname = \"api\"\npeers = [{{ addr = \"127.0.0.1:3000\" }}]\n\n\
                 [[routes]]\nname = \"r\"\nupstream = \"api\"\npath = \"/\"\nauth = [\"api_key\"]\n\n\
                 [auth.api_key]\nkeys = [{{ id = \"svc\", consumer = \"svc-job\", key_file = {:?} }}]\n",
                key.display().to_string()
            ),
        )
        .expect("write config");
        let e = run(&path, KeysCommand::Revoke { id: "svc".into() }).expect_err("refused");
        assert!(
            matches!(&e, KeysError::Key(KeyError::ConfigKey { id }) if id == "svc"),
            "{e:?}"
        );
        assert!(e.to_string().contains("remove it from"), "{e}");
        let other = run(&path, KeysCommand::Revoke { id: "other".into() }).expect_err("no store");
        assert!(matches!(other, KeysError::NoStore { .. }), "{other:?}");
    }

    #[test]
    fn an_unreadable_config_keeps_the_io_error_as_source() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("absent.toml");
        let e = run(
            &missing,
            KeysCommand::List {
                consumer: "alice".into(),
            },
        )
        .expect_err("no such file");
        assert!(matches!(e, KeysError::Config(_)), "{e:?}");
        assert!(e.to_string().contains("absent.toml"), "{e}");
        let source = e.source().expect("the read error is kept");
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
    }
}
