//! Loading the settings in layers (built-in defaults < `config/*.toml` < `DAM_*` environment variables) and
//! validating the result; why a load failed is a `SettingsError`. The sections themselves are plain data elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Settings;
use super::secrets::SECRET_SETTINGS;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("could not list the config directory {path}: {source}")]
    ConfigDirectory { path: PathBuf, source: std::io::Error },
    #[error("{0} is a secret: set it in the environment ({1}), never in a config file")]
    SecretInFile(&'static str, &'static str),
    #[error("invalid limits: {0}")]
    InvalidLimits(#[from] crate::limits::LimitsError),
    #[error("telemetry.sample_ratio must be between 0.0 and 1.0, not {0}")]
    InvalidSampleRatio(f64),
}

/// Environment variable naming the directory of `*.toml` layers (default `config`).
pub const CONFIG_DIRECTORY_VARIABLE: &str = "DAM_CONFIG_DIR";

/// Settings keys whose environment values are comma-separated lists.
const LIST_SETTING_KEYS: [&str; 3] = ["chat.allowed_models", "mock_llm.models", "auth.trusted_proxies"];

impl Settings {
    /// Loads the layers from the process: `$DAM_CONFIG_DIR` (or `./config`) and the `DAM_*` environment.
    pub fn load() -> Result<Self, SettingsError> {
        let environment: HashMap<String, String> = std::env::vars().collect();
        let config_directory = environment
            .get(CONFIG_DIRECTORY_VARIABLE)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load_from(&config_directory, &environment)
    }

    /// Loads the layers from a given directory (missing is fine) and a given environment map.
    pub fn load_from(
        config_directory: &Path,
        environment: &HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut file_layers = config::Config::builder();
        for file in toml_files_in(config_directory)? {
            file_layers = file_layers.add_source(config::File::from(file));
        }
        let files_only = file_layers.build_cloned()?;
        for (secret, variable) in SECRET_SETTINGS {
            if files_only.get_string(secret).is_ok() {
                return Err(SettingsError::SecretInFile(secret, variable));
            }
        }

        let dam_variables: config::Map<String, String> = environment
            .iter()
            .filter(|(name, _)| name.starts_with("DAM_") && name.as_str() != CONFIG_DIRECTORY_VARIABLE)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut environment_layer = config::Environment::with_prefix("DAM")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(dam_variables));
        for key in LIST_SETTING_KEYS {
            environment_layer = environment_layer.with_list_parse_key(key);
        }

        let merged = file_layers.add_source(environment_layer).build()?;
        let settings: Settings = merged.try_deserialize()?;
        settings.limits.validate()?;
        if !(0.0..=1.0).contains(&settings.telemetry.sample_ratio) {
            return Err(SettingsError::InvalidSampleRatio(settings.telemetry.sample_ratio));
        }
        Ok(settings)
    }
}

fn toml_files_in(config_directory: &Path) -> Result<Vec<PathBuf>, SettingsError> {
    let entries = match std::fs::read_dir(config_directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SettingsError::ConfigDirectory { path: config_directory.to_owned(), source });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    // Sorted so that `10-local.toml` deterministically overrides `00-defaults.toml`.
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::settings::ExposeSecret;

    fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let settings = Settings::load_from(directory.path(), &HashMap::new()).expect("settings load");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn environment_overrides_files_which_override_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            directory.path().join("10-local.toml"),
            "[redis]\nkey_prefix = \"file:\"\npool_size = 4\n[gateway]\nport = 1234\n",
        )
        .expect("write config file");
        let variables = environment(&[
            ("DAM_GATEWAY__PORT", "4321"),
            ("DAM_CHAT__ALLOWED_MODELS", "a,b"),
            ("DAM_LLM__API_KEY", "sk-secret"),
            ("UNRELATED", "ignored"),
        ]);
        let settings = Settings::load_from(directory.path(), &variables).expect("settings load");
        assert_eq!(settings.redis.key_prefix, "file:");
        assert_eq!(settings.redis.pool_size, 4);
        assert_eq!(settings.gateway.port, 4321);
        assert_eq!(settings.chat.allowed_models, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(settings.llm.api_key.as_ref().map(|key| key.expose_secret()), Some("sk-secret"));
    }

    #[test]
    fn one_nested_limit_can_be_set_alone_and_the_rest_keep_their_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let variables = environment(&[
            ("DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND", "100"),
            ("DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND", "7"),
        ]);
        let settings = Settings::load_from(directory.path(), &variables).expect("settings load");
        let defaults = Limits::default();
        assert_eq!(settings.limits.tiers.anonymous.rate_per_second, 100.0);
        assert_eq!(settings.limits.tiers.anonymous.burst, defaults.tiers.anonymous.burst);
        assert_eq!(settings.limits.tiers.premium, defaults.tiers.premium);
        assert_eq!(settings.limits.llm.max_requests_per_second, 7.0);
        assert_eq!(settings.limits.llm.max_tokens_per_minute, defaults.llm.max_tokens_per_minute);
        let typo = environment(&[("DAM_LIMITS__TIERS__ANONYMOUS__BRUST", "3")]);
        assert!(Settings::load_from(directory.path(), &typo).is_err(), "typos in a tier are refused");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let variables = environment(&[("DAM_GATEWAY__PROT", "1")]);
        let error = Settings::load_from(directory.path(), &variables).expect_err("typo must fail");
        assert!(error.to_string().contains("prot"), "{error}");
    }

    #[test]
    fn an_api_key_in_a_config_file_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(directory.path().join("a.toml"), "[llm]\napi_key = \"sk-leak\"\n").expect("write");
        let error = Settings::load_from(directory.path(), &HashMap::new()).expect_err("secret in file");
        assert!(matches!(error, SettingsError::SecretInFile("llm.api_key", _)));
    }

    #[test]
    fn the_sample_config_file_holds_exactly_the_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml.sample");
        std::fs::copy(sample, directory.path().join("example.toml")).expect("copy the sample");
        let settings = Settings::load_from(directory.path(), &HashMap::new()).expect("the sample loads");
        assert_eq!(settings, Settings::default());
    }
}
