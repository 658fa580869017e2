//! The settings that are secrets (`llm.api_key`, `dam.admin_token`): the one environment variable each may come
//! from, and how a section holding one is serialized and compared without the secret ever leaving its
//! `SecretString`.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

/// Settings that hold secrets, with the only variable each may come from.
pub(super) const SECRET_SETTINGS: [(&str, &str); 2] =
    [("llm.api_key", "DAM_LLM__API_KEY"), ("dam.admin_token", "DAM_DAM__ADMIN_TOKEN")];

/// What a set secret serializes as. A dump of the settings shows that one is set, never what it is; and a dump
/// fed back as a config file is refused, since secrets may only come from the environment.
const REDACTED: &str = "[redacted]";

/// `serialize_with` for an optional secret: `"[redacted]"` when set, `null` when not.
pub(super) fn serialize_redacted<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// Whether two optional secrets are both unset or hold the same text, for comparing settings (`SecretString` has
/// no `PartialEq`, so that no comparison happens by accident). Not constant-time: never use it to check a
/// caller's credentials.
pub(super) fn same_secret(left: &Option<SecretString>, right: &Option<SecretString>) -> bool {
    match (left, right) {
        (None, None) => true,
        (Some(left), Some(right)) => left.expose_secret() == right.expose_secret(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DamSettings, LlmSettings, Settings};

    fn settings_with_secrets(secret: &str) -> Settings {
        Settings {
            llm: LlmSettings { api_key: Some(SecretString::from(secret)), ..LlmSettings::default() },
            dam: DamSettings { admin_token: Some(SecretString::from(secret)), ..DamSettings::default() },
            ..Settings::default()
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = SecretString::from("sk-do-not-print");
        assert!(!format!("{secret:?}").contains("sk-do-not-print"));
        let settings = settings_with_secrets("sk-do-not-print");
        assert!(!format!("{settings:?}").contains("sk-do-not-print"));
    }

    #[test]
    fn secrets_are_not_in_the_debug_output_of_their_sections() {
        let settings = settings_with_secrets("sk-hidden-in-debug");
        let llm = format!("{:?}", settings.llm);
        let dam = format!("{:#?}", settings.dam);
        assert!(!llm.contains("sk-hidden-in-debug"), "{llm}");
        assert!(!dam.contains("sk-hidden-in-debug"), "{dam}");
        assert!(
            llm.contains("api_key: Some(") && dam.contains("admin_token: Some("),
            "the field still shows"
        );
    }

    #[test]
    fn secrets_serialize_redacted() {
        let serialized =
            serde_json::to_value(settings_with_secrets("sk-do-not-serialize")).expect("serialize");
        assert!(!serialized.to_string().contains("sk-do-not-serialize"), "{serialized}");
        assert_eq!(serialized["llm"]["api_key"], REDACTED);
        assert_eq!(serialized["dam"]["admin_token"], REDACTED);
        assert!(serde_json::to_value(Settings::default()).expect("serialize")["llm"]["api_key"].is_null());
    }

    #[test]
    fn sections_with_secrets_compare_by_the_secret() {
        assert_eq!(settings_with_secrets("a"), settings_with_secrets("a"));
        assert_ne!(settings_with_secrets("a"), settings_with_secrets("b"));
        assert_ne!(settings_with_secrets("a"), Settings::default());
    }
}
