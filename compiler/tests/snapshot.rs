//! A snapshot of one tenant's complete output: any change to what is rendered shows up here for review
//! (`cargo insta review`).

mod support;

#[test]
fn acme_renders_exactly_this() {
    let inputs = support::repo_inputs();
    let acme: Vec<_> = inputs
        .tenants
        .iter()
        .filter(|t| t.folder == "acme")
        .cloned()
        .collect();
    let valid = compiler::validate::tenants(&inputs.platform, &acme).unwrap();
    let rendered =
        compiler::render::render_tenant(&inputs.platform, &inputs.templates, &valid[0]).unwrap();
    let mut all = String::new();
    for (path, text) in &rendered.files {
        if path.ends_with("secret.sops.yaml") {
            // Ciphertext is checked to be copied byte for byte, not snapshotted.
            assert_eq!(text, &valid[0].secrets);
            continue;
        }
        all.push_str(&format!("=== {path}\n{text}"));
    }
    all.push_str(&format!(
        "=== tenant table entry\n{}",
        serde_json::to_string_pretty(&rendered.table_entry).unwrap()
    ));
    insta::assert_snapshot!("acme", all);
}
