//! CPU and memory quantities as Kubernetes writes them ("500m", "2", "512Mi", "1Gi"), parsed to numbers so
//! that tiers and overrides can be compared and quotas computed.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// CPU in millicores, written as "250m" or whole cores ("1").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "QuantityText", into = "String")]
pub struct Cpu {
    millis: u64,
    text: String,
}

/// Memory or storage in bytes, written with a binary suffix ("512Mi", "1Gi", "10Gi").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "QuantityText", into = "String")]
pub struct Memory {
    bytes: u64,
    text: String,
}

/// A quantity may be written as a YAML number (`cpu: 1`) or a string (`cpu: "500m"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum QuantityText {
    Int(u64),
    Text(String),
}

impl QuantityText {
    fn into_string(self) -> String {
        match self {
            QuantityText::Int(i) => i.to_string(),
            QuantityText::Text(s) => s,
        }
    }
}

impl Cpu {
    pub fn parse(text: &str) -> Result<Cpu, String> {
        let err = || {
            format!("CPU quantity {text:?} is not valid: write millicores like \"500m\" or whole cores like \"2\"")
        };
        let millis = if let Some(m) = text.strip_suffix('m') {
            m.parse::<u64>().map_err(|_| err())?
        } else {
            text.parse::<u64>()
                .map_err(|_| err())?
                .checked_mul(1000)
                .ok_or_else(err)?
        };
        if millis == 0 || millis > 64_000 {
            return Err(format!(
                "CPU quantity {text:?} is out of range: between 1m and 64 cores"
            ));
        }
        Ok(Cpu {
            millis,
            text: text.to_string(),
        })
    }
    pub fn from_millis(millis: u64) -> Cpu {
        let text = if millis % 1000 == 0 {
            (millis / 1000).to_string()
        } else {
            format!("{millis}m")
        };
        Cpu { millis, text }
    }
    pub fn millis(&self) -> u64 {
        self.millis
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Memory {
    pub fn parse(text: &str) -> Result<Memory, String> {
        let err = || {
            format!("memory quantity {text:?} is not valid: write a whole number with a binary suffix like \"512Mi\" or \"2Gi\"")
        };
        let (digits, unit): (&str, u64) = [
            ("Ki", 1u64 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
        ]
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .ok_or_else(err)?;
        let bytes = digits
            .parse::<u64>()
            .map_err(|_| err())?
            .checked_mul(unit)
            .ok_or_else(err)?;
        if bytes == 0 || bytes > (1 << 50) {
            return Err(format!("memory quantity {text:?} is out of range"));
        }
        Ok(Memory {
            bytes,
            text: text.to_string(),
        })
    }
    /// Writes `bytes` with the largest binary suffix that divides it.
    pub fn from_bytes(bytes: u64) -> Memory {
        let text = [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ]
        .iter()
        .find(|(_, unit)| bytes % unit == 0)
        .map(|(s, unit)| format!("{}{s}", bytes / unit))
        .unwrap_or_else(|| bytes.to_string());
        Memory { bytes, text }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<QuantityText> for Cpu {
    type Error = String;
    fn try_from(v: QuantityText) -> Result<Self, String> {
        Cpu::parse(&v.into_string())
    }
}
impl TryFrom<QuantityText> for Memory {
    type Error = String;
    fn try_from(v: QuantityText) -> Result<Self, String> {
        Memory::parse(&v.into_string())
    }
}
impl From<Cpu> for String {
    fn from(v: Cpu) -> String {
        v.text
    }
}
impl From<Memory> for String {
    fn from(v: Memory) -> String {
        v.text
    }
}
impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl JsonSchema for Cpu {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Cpu")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "integer"], "pattern": "^[0-9]+m?$",
                      "description": "CPU: millicores like \"500m\" or whole cores like \"2\""})
    }
}
impl JsonSchema for Memory {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Memory")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|Ti)$",
                      "description": "memory with a binary suffix, like \"512Mi\" or \"2Gi\""})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_formats() {
        assert_eq!(Cpu::parse("500m").unwrap().millis(), 500);
        assert_eq!(Cpu::parse("2").unwrap().millis(), 2000);
        assert!(Cpu::parse("1.5").is_err());
        assert!(Cpu::parse("0").is_err());
        assert_eq!(Memory::parse("512Mi").unwrap().bytes(), 512 << 20);
        assert!(Memory::parse("512M").is_err());
        assert_eq!(Cpu::from_millis(1500).as_str(), "1500m");
        assert_eq!(Cpu::from_millis(2000).as_str(), "2");
        assert_eq!(Memory::from_bytes(3 << 30).as_str(), "3Gi");
        assert_eq!(Memory::from_bytes(1536 << 20).as_str(), "1536Mi");
    }
}
