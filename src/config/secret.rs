//! Secrets come from the environment or from files, never from the TOML itself, so a config
//! file can be committed and shown without leaking anything.

use std::path::PathBuf;

/// Why a secret could not be read. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The named file could not be read.
    #[error("cannot read secret file {path:?}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or variable is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

/// Reads a secret from `env` (a variable name) or `file` (a path), in that order.
///
/// Returns `Ok(None)` when neither is given or the variable is unset.
pub fn read_secret(env: Option<&str>, file: Option<&str>) -> Result<Option<String>, SecretError> {
    if let Some(var) = env {
        if let Ok(value) = std::env::var(var) {
            let value = value.trim().to_string();
            if value.is_empty() {
                return Err(SecretError::Empty(format!("environment variable {var}")));
            }
            return Ok(Some(value));
        }
    }
    if let Some(path) = file {
        let value = std::fs::read_to_string(path).map_err(|source| SecretError::File {
            path: PathBuf::from(path),
            source,
        })?;
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(SecretError::Empty(format!("file {path:?}")));
        }
        return Ok(Some(value));
    }
    Ok(None)
}
