//! The README's settings table names every setting, so no setting goes undocumented.

#[test]
fn the_readme_settings_table_names_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let missing: Vec<String> = protocol::settings::every_setting_name()
        .into_iter()
        .filter(|name| !readme.contains(&format!("| `{name}` |")))
        .collect();
    assert!(missing.is_empty(), "settings missing from the README table: {missing:?}");
}
