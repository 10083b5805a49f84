//! `portcullis keys create|list|revoke`: manages API keys in the configured store directly, so
//! keys can be handled without a running gateway (and without exposing the admin port).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::auth::{KeyStore, NewKey};

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

/// Runs a keys command against the store of the config at `path`; the text to print, or why not.
pub fn run(path: &Path, command: KeysCommand) -> Result<String, String> {
    let config = crate::runtime::load_config(path).map_err(|e| e.to_string())?;
    if config.store.is_none() {
        return Err(format!(
            "{}: has no [store]; keys of the in-process store live inside the running gateway: \
             declare them under [auth.api_key] keys or use its admin API (POST /keys)",
            path.display()
        ));
    }
    let services = crate::server::services(&config).map_err(|e| e.to_string())?;
    let store = services.auth.store.clone();
    let keys = crate::runtime::key_store(&config, &store)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: has no [auth.api_key] section", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        store
            .ping(Duration::from_secs(3))
            .await
            .map_err(|e| format!("cannot reach the store: {e}"))?;
        execute(&keys, command).await
    })
}

async fn execute(keys: &KeyStore, command: KeysCommand) -> Result<String, String> {
    match command {
        KeysCommand::Create {
            consumer,
            plan,
            scopes,
            labels,
            ttl,
        } => {
            let mut parsed = BTreeMap::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| format!("label {l:?} is not name=value"))?;
                parsed.insert(k.to_string(), v.to_string());
            }
            let (record, secret) = keys
                .create(NewKey {
                    consumer,
                    plan,
                    scopes,
                    labels: parsed,
                    ttl,
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"key": secret, "record": record}).to_string())
        }
        KeysCommand::List { consumer } => {
            let records = keys.list(&consumer).await.map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"keys": records}).to_string())
        }
        KeysCommand::Revoke { id } => match keys.revoke(&id).await.map_err(|e| e.to_string())? {
            true => Ok(serde_json::json!({"revoked": id}).to_string()),
            false => Err(format!("no key with id {id:?}")),
        },
    }
}
