//! `dam limits set tiers.premium.burst=9 max_queue_depth=2000`: dotted assignments (and an optional JSON patch)
//! turned into the JSON merge patch `PUT /admin/limits` takes; and the reverse, limits as dotted rows for tables.

use serde_json::{Map, Value};

/// Builds one patch from `json` (an object, applied first) and `assignments` (`path=value`, applied in order).
/// A value is read as JSON when it is JSON (`9`, `2.5`, `true`, `"text"`), and as text otherwise.
pub fn patch_from_assignments(json: Option<&str>, assignments: &[String]) -> Result<Value, String> {
    let mut patch = match json {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Value::Object(object),
            Ok(_) => {
                return Err("--json must be a JSON object, e.g. '{\"max_queue_depth\": 2000}'".to_owned());
            }
            Err(error) => return Err(format!("--json is not valid JSON: {error}")),
        },
        None => Value::Object(Map::new()),
    };
    for assignment in assignments {
        let (path, text) = assignment.split_once('=').ok_or_else(|| {
            format!("{assignment:?} is not an assignment; write path=value, e.g. tiers.premium.burst=9")
        })?;
        let segments: Vec<&str> = path.trim().split('.').collect();
        if segments.iter().any(|segment| {
            segment.is_empty() || !segment.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        }) {
            return Err(format!(
                "{path:?} is not a limits path; write names joined by dots, e.g. tiers.premium.burst"
            ));
        }
        let value = serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.to_owned()));
        insert_at_path(&mut patch, &segments, value);
    }
    if patch.as_object().is_some_and(Map::is_empty) {
        return Err("nothing to set: give path=value assignments or --json '{...}'".to_owned());
    }
    Ok(patch)
}

fn insert_at_path(target: &mut Value, segments: &[&str], value: Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = target;
    for segment in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .expect("just made an object")
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    node.as_object_mut().expect("just made an object").insert(last.to_string(), value);
}

/// Every leaf of `value` as (dotted path, value text), in the object's order.
pub fn dotted_rows(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
        match value {
            Value::Object(fields) => {
                for (name, inner) in fields {
                    let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                    walk(&path, inner, rows);
                }
            }
            Value::String(text) => rows.push((prefix.to_owned(), text.clone())),
            other => rows.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut rows = Vec::new();
    walk("", value, &mut rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_assignments_become_a_nested_patch_with_json_values() {
        let patch = patch_from_assignments(
            Some(r#"{"max_queue_depth": 10}"#),
            &[
                "tiers.premium.burst=9".to_owned(),
                "tiers.premium.rate_per_second=2.5".to_owned(),
                "max_queue_depth=20".to_owned(),
            ],
        )
        .expect("a patch");
        assert_eq!(
            patch,
            json!({"max_queue_depth": 20, "tiers": {"premium": {"burst": 9, "rate_per_second": 2.5}}})
        );
    }

    #[test]
    fn malformed_assignments_and_empty_patches_are_refused_with_an_example() {
        assert!(
            patch_from_assignments(None, &["burst".to_owned()]).expect_err("no =").contains("path=value")
        );
        assert!(patch_from_assignments(None, &["tiers..burst=1".to_owned()]).is_err());
        assert!(patch_from_assignments(None, &[]).expect_err("empty").contains("nothing to set"));
        assert!(patch_from_assignments(Some("[1]"), &[]).is_err());
        assert_eq!(patch_from_assignments(None, &["a=text".to_owned()]).expect("text"), json!({"a": "text"}));
    }

    #[test]
    fn nested_values_flatten_into_dotted_rows() {
        let rows = dotted_rows(&json!({"a": 1, "b": {"c": 2.5, "d": "x"}}));
        assert_eq!(
            rows,
            vec![("a".into(), "1".into()), ("b.c".into(), "2.5".into()), ("b.d".into(), "x".into())]
        );
    }
}
