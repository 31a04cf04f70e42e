//! The manifest templates (minijinja) under templates/, held in memory ([`crate::source`] reads them from a
//! directory or a git tree).
//!
//! Templates only lay values out; every value is computed in Rust ([`crate::render`]) and passed through the
//! `tojson` filter, so that no template can produce a type confusion ("1" versus 1, "no" versus false).
//! Manifest templates write JSON, which parses an order of magnitude faster than YAML; the compiler writes
//! every object as canonical YAML ([`crate::canonical`]), so reviewers read YAML either way.

use crate::diagnostics::{Diagnostic, Diagnostics};
use std::collections::BTreeMap;

/// The operator template, rendered once per operator by `platform_render`.
pub const OPERATOR_TEMPLATE: &str = "platform/operator.json.j2";
/// The api's configuration file, rendered by `platform_render`.
pub const API_CONFIG_TEMPLATE: &str = "platform/api-config.toml.j2";
/// The token proxy's configuration file, rendered by `platform_render`.
pub const PROXY_CONFIG_TEMPLATE: &str = "platform/token-proxy-config.toml.j2";

/// Every platform template `platform_render` renders, listed here so that loading (this module)
/// and rendering depend on each other one way only.
pub const PLATFORM: &[&str] = &[
    "platform/api.json.j2",
    "platform/token-proxy.json.j2",
    "platform/nango.json.j2",
    "platform/databases.json.j2",
    "platform/entry.json.j2",
    "platform/tenant-artifacts.json.j2",
    OPERATOR_TEMPLATE,
    API_CONFIG_TEMPLATE,
    PROXY_CONFIG_TEMPLATE,
];

/// Every tenant template the compiler renders, by name (its path under templates/); the platform's are
/// [`PLATFORM`].
pub const REQUIRED: &[&str] = &[
    "tenant/namespace.json.j2",
    "tenant/serviceaccount.json.j2",
    "tenant/resourcequota.json.j2",
    "tenant/limitrange.json.j2",
    "tenant/networkpolicy.json.j2",
    "tenant/configmap.json.j2",
    "tenant/persistentvolumeclaim.json.j2",
    "tenant/deployment.json.j2",
    "tenant/openclaw.json.j2",
    "tenant/AGENTS.md.j2",
    "flux/tenant-kustomization.json.j2",
    "platform/tenant-table-shard.json.j2",
];

/// The templates, compiled once and shared by every render (thread-safe).
pub struct Templates {
    env: minijinja::Environment<'static>,
    sources: BTreeMap<String, String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The `tojson` filter: the value as compact JSON. It replaces minijinja's built-in, which also escapes `<`,
/// `>`, `&` and `'` as `\u` sequences for HTML and parses keyword arguments on every call: these templates write
/// JSON that is parsed right away (the escapes would change nothing) and run a hundred times per tenant.
fn tojson(value: &minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    serde_json::to_string(value)
        .map(minijinja::Value::from_safe_string)
        .map_err(|e| {
            minijinja::Error::new(
                minijinja::ErrorKind::BadSerialization,
                "value cannot be written as JSON",
            )
            .with_source(e)
        })
}

impl Templates {
    /// Builds from template sources keyed by their path under templates/ (e.g. `tenant/deployment.json.j2`).
    pub fn from_sources(sources: BTreeMap<String, String>) -> Result<Templates, Diagnostics> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Templates produce YAML/JSON/Markdown, never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("tojson", tojson);
        let mut problems = Diagnostics::new();
        for name in REQUIRED.iter().chain(PLATFORM) {
            if !sources.contains_key(*name) {
                problems.push(
                    Diagnostic::file(format!("templates/{name}"), "template is missing")
                        .with_hint("restore it from the repository; the compiler renders every template listed in compiler/src/templates.rs"),
                );
            }
        }
        for (name, source) in &sources {
            if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
                let line = e.line().unwrap_or(1);
                problems.push(
                    Diagnostic::at(
                        format!("templates/{name}"),
                        source,
                        line,
                        1,
                        format!(
                            "template does not compile: {}",
                            e.detail().unwrap_or("syntax error")
                        ),
                    )
                    .with_hint("fix the minijinja syntax"),
                );
            }
        }
        problems.into_result(())?;
        Ok(Templates { env, sources })
    }

    /// Renders template `name` with `context`.
    pub fn render<S: serde::Serialize>(
        &self,
        name: &str,
        context: &S,
    ) -> Result<String, Diagnostic> {
        let template = self.env.get_template(name).map_err(|e| {
            Diagnostic::file(
                format!("templates/{name}"),
                format!("template is missing: {e}"),
            )
        })?;
        template.render(context).map_err(|e| {
            let source = self.sources.get(name).map(String::as_str).unwrap_or_default();
            let line = e.line().unwrap_or(1);
            Diagnostic::at(
                format!("templates/{name}"),
                source,
                line,
                1,
                format!("template fails to render: {}", e.detail().unwrap_or(&e.to_string())),
            )
            .with_hint("every value the template uses must be in the render context (see compiler/src/render.rs)")
        })
    }

    /// The source of each template, for hashing and for writing a seeded repository.
    pub fn sources(&self) -> &BTreeMap<String, String> {
        &self.sources
    }
}
