//! Checks that `kernel/config` took effect. Kconfig silently drops a requested symbol whose
//! dependencies are not met (or that the arch does not define), which would otherwise surface
//! much later as "unknown filesystem type" at mount time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::util::{self, Error, Result};

/// What the fragment asks of one symbol.
enum Wanted {
    /// `CONFIG_X=value`: exactly this value.
    Value(String),
    /// `# CONFIG_X is not set`: neither built in nor modular.
    Off,
}

/// The settings `kernel/config` asks for.
pub struct Fragment {
    path: PathBuf,
    wanted: Vec<(String, Wanted)>,
}

impl Fragment {
    /// Reads and checks the fragment's syntax, before make spends time on it.
    pub fn load(path: &Path) -> Result<Self> {
        let wanted = parse_fragment(&util::read_to_string(path)?, path)?;
        Ok(Self {
            path: path.to_owned(),
            wanted,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails listing every setting that the final `config` does not honour.
    pub fn verify(&self, config: &Path) -> Result<()> {
        let config_text = util::read_to_string(config)?;
        let actual = parse_config(&config_text);
        let dropped: Vec<String> = self
            .wanted
            .iter()
            .filter_map(|(symbol, wanted)| {
                mismatch(symbol, wanted, actual.get(symbol.as_str()).copied())
            })
            .collect();
        if dropped.is_empty() {
            return Ok(());
        }
        Err(Error::new(format!(
            "{} setting(s) of {} did not stick in {} (Kconfig drops a symbol whose dependencies \
             are not met or that ARCH=lklrs does not define):\n{}",
            dropped.len(),
            self.path.display(),
            config.display(),
            dropped.join("\n")
        )))
    }
}

fn mismatch(symbol: &str, wanted: &Wanted, actual: Option<&str>) -> Option<String> {
    let got = actual.unwrap_or("not set");
    match wanted {
        Wanted::Value(value) if actual != Some(value.as_str()) => {
            Some(format!("  {symbol}={value} (got: {got})"))
        }
        Wanted::Off if matches!(actual, Some("y" | "m")) => {
            Some(format!("  # {symbol} is not set (got: {got})"))
        }
        _ => None,
    }
}

fn parse_fragment(text: &str, path: &Path) -> Result<Vec<(String, Wanted)>> {
    let mut wanted = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let unset = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
            .filter(|s| s.starts_with("CONFIG_"));
        if let Some(symbol) = unset {
            wanted.push((symbol.to_owned(), Wanted::Off));
        } else if let Some((symbol, value)) = line
            .split_once('=')
            .filter(|(s, _)| s.starts_with("CONFIG_"))
        {
            wanted.push((symbol.to_owned(), Wanted::Value(value.to_owned())));
        } else if !line.is_empty() && !line.starts_with('#') {
            return Err(Error::new(format!(
                "{}:{}: not a Kconfig setting: {line}",
                path.display(),
                index + 1
            )));
        }
    }
    Ok(wanted)
}

/// Symbol → value for every `CONFIG_X=value` line; unset symbols are simply absent.
fn parse_config(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter(|line| line.starts_with("CONFIG_"))
        .filter_map(|line| line.split_once('='))
        .collect()
}
