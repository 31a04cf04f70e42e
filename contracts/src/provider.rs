//! The services a tenant can connect, as tenant specs, the tenant table and the proxy name them.

use serde::{Deserialize, Serialize};

/// A service the agent can use on the customer's behalf through Nango.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Github,
    Slack,
    Linear,
    Notion,
    Jira,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Google,
        Provider::Github,
        Provider::Slack,
        Provider::Linear,
        Provider::Notion,
        Provider::Jira,
    ];

    /// The name on the wire (`google`, `github`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Github => "github",
            Provider::Slack => "slack",
            Provider::Linear => "linear",
            Provider::Notion => "notion",
            Provider::Jira => "jira",
        }
    }

    /// The provider of a wire name, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_every_name() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("Google"), None);
    }
}
