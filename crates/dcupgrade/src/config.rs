//! `dcupgrade run` settings from three layers: a TOML file (`--config FILE`), environment
//! variables `DCUPGRADE_<NAME>`, and flags. Precedence: flag over environment over file over
//! the built-in default ([`layered`]). Every setting a `run` flag takes has a file key of the
//! same name with `-` → `_` (`--node-listen` → `node_listen`) and an environment variable
//! `DCUPGRADE_` + the key in upper case (`DCUPGRADE_NODE_LISTEN`). A list setting (`chain`,
//! `download_ca`) given by a higher layer replaces the lower layer's list; in the environment
//! its items are separated by commas.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// `--log-format`: how log lines are written (stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `time`, `level`, `target`, `message`, then the span and
    /// event fields.
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchArg {
    #[default]
    MakeBeforeBreak,
    BreakBeforeMake,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LauncherKind {
    /// The software TEE platform (`dctee-sim launch`).
    #[default]
    Sim,
    /// `gramine-sgx` as a child process (an agent running outside Gramine).
    Gramine,
    /// The host-side launch broker (an agent running inside Gramine).
    Broker,
}

/// One layer of `run` settings: what a file, the environment or the flags say (`None`: this
/// layer does not set it). The file's keys are exactly these field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Agent state: journal, downloaded artifacts, bundles, sealed keys in transit.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Local release feed directory (a release source).
    #[arg(long)]
    pub feed: Option<PathBuf>,
    /// DCChain RPC endpoint, `ws://HOST:PORT` or `wss://HOST:PORT` (a release source;
    /// repeatable, tried in order).
    #[arg(long = "chain")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<String>>,
    /// Re-read the chain's finalized head this often even without notifications [default: 6000].
    #[arg(long)]
    pub chain_poll_ms: Option<u64>,
    /// The agent's API address [default: 127.0.0.1:6666].
    #[arg(long)]
    #[serde(default, with = "opt_addr")]
    pub listen: Option<SocketAddr>,
    /// The node's data directory.
    #[arg(long)]
    pub node_data: Option<PathBuf>,
    /// The node's data API address [default: 127.0.0.1:7000].
    #[arg(long)]
    #[serde(default, with = "opt_addr")]
    pub node_listen: Option<SocketAddr>,
    /// The node's upgrade port [default: 127.0.0.1:6667].
    #[arg(long)]
    #[serde(default, with = "opt_addr")]
    pub node_upgrade: Option<SocketAddr>,
    /// How nodes are started: on the software platform (`sim`) or under Gramine-SGX
    /// [default: sim].
    #[arg(long, value_enum)]
    pub launcher: Option<LauncherKind>,
    /// How the new node takes over: `make-before-break` (the agent owns the data port and
    /// passes it to every node; the new node gets the keys while the old one serves; no
    /// connection is refused) or `break-before-make` (the old node stops first). Only the
    /// `sim` launcher can pass sockets; the others always break before make
    /// [default: make-before-break].
    #[arg(long, value_enum)]
    pub switch: Option<SwitchArg>,
    /// `sim`: the software TEE platform's `dctee-sim` binary (required with `sim`).
    #[arg(long)]
    pub sim_bin: Option<PathBuf>,
    /// `sim`: the platform's state directory, for `dctee-sim launch --state` (required with
    /// `sim`).
    #[arg(long)]
    pub platform_state: Option<PathBuf>,
    /// `gramine`: the `gramine-sgx` program [default: gramine-sgx].
    #[arg(long)]
    pub gramine_bin: Option<PathBuf>,
    /// `broker`: the launch broker's address [default: 127.0.0.1:6668].
    #[arg(long)]
    #[serde(default, with = "opt_addr")]
    pub broker: Option<SocketAddr>,
    /// First run only: the installed node's bundle directory.
    #[arg(long)]
    pub initial_bundle: Option<PathBuf>,
    /// First run only: the installed node's signed release record.
    #[arg(long)]
    pub initial_record: Option<PathBuf>,
    /// This agent's committee-signed upgrader record.
    #[arg(long)]
    pub agent_record: Option<PathBuf>,
    /// Extra PEM root certificate trusted for https downloads (repeatable).
    #[arg(long = "download-ca")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_ca: Option<Vec<PathBuf>>,
    /// Extra PEM root certificate trusted for wss:// chain endpoints (repeatable).
    #[arg(long = "chain-ca")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_ca: Option<Vec<PathBuf>>,
    /// Feed poll interval [default: 500].
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// Base of the exponential backoff for a failed release [default: 60000].
    #[arg(long)]
    pub retry_backoff_ms: Option<u64>,
    /// Deadline for a started node to report ready [default: 30000].
    #[arg(long)]
    pub node_ready_ms: Option<u64>,
    /// Deadline for the key handover [default: 30000].
    #[arg(long)]
    pub handover_ms: Option<u64>,
    /// Deadline for the new node's health check [default: 15000].
    #[arg(long)]
    pub health_ms: Option<u64>,
    /// Log format of the agent and, unless `DCNODE_LOG_FORMAT` is set, of its nodes
    /// (`--log-format`, `DCUPGRADE_LOG_FORMAT`) [default: text].
    #[arg(skip)]
    pub log_format: Option<LogFormat>,
}

/// Every key of the file, in the order of [`Settings`].
#[cfg(test)]
pub const KEYS: &[&str] = &[
    "state",
    "feed",
    "chain",
    "chain_poll_ms",
    "listen",
    "node_data",
    "node_listen",
    "node_upgrade",
    "launcher",
    "switch",
    "sim_bin",
    "platform_state",
    "gramine_bin",
    "broker",
    "initial_bundle",
    "initial_record",
    "agent_record",
    "download_ca",
    "chain_ca",
    "poll_ms",
    "retry_backoff_ms",
    "node_ready_ms",
    "handover_ms",
    "health_ms",
    "log_format",
];

/// The effective `run` configuration: every layer applied and defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunConfig {
    pub state: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<PathBuf>,
    pub chain: Vec<String>,
    pub chain_poll_ms: u64,
    #[serde(serialize_with = "ser_addr")]
    pub listen: SocketAddr,
    pub node_data: PathBuf,
    #[serde(serialize_with = "ser_addr")]
    pub node_listen: SocketAddr,
    #[serde(serialize_with = "ser_addr")]
    pub node_upgrade: SocketAddr,
    pub launcher: LauncherKind,
    pub switch: SwitchArg,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_bin: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_state: Option<PathBuf>,
    pub gramine_bin: PathBuf,
    #[serde(serialize_with = "ser_addr")]
    pub broker: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_bundle: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_record: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_record: Option<PathBuf>,
    pub download_ca: Vec<PathBuf>,
    pub chain_ca: Vec<PathBuf>,
    pub poll_ms: u64,
    pub retry_backoff_ms: u64,
    pub node_ready_ms: u64,
    pub handover_ms: u64,
    pub health_ms: u64,
    pub log_format: LogFormat,
}

impl RunConfig {
    /// The effective configuration as a TOML file (what `dcupgrade config check` prints; it
    /// parses back as a config file).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// The environment-variable name of a setting: `DCUPGRADE_` + the file key in upper case.
pub fn env_name(key: &str) -> String {
    format!("DCUPGRADE_{}", key.to_uppercase())
}

/// Reads a config file. Unknown keys are refused with their name; a bad value with its key
/// and what is expected.
pub fn load_file(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parses a config file's text (see [`load_file`]).
pub fn parse_file(text: &str) -> Result<Settings> {
    toml::from_str::<Settings>(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        // The key whose value is wrong: the one on the line the error points at.
        let key = e.span().and_then(|s| {
            let start = text[..s.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = text[start..].lines().next().unwrap_or("");
            let lineno = text[..start].matches('\n').count() + 1;
            line.split_once('=')
                .map(|(k, _)| (k.trim().trim_matches('"').to_string(), lineno))
        });
        match key {
            Some((k, n)) if !msg.contains("unknown field") => {
                anyhow!("key `{k}` (line {n}): {msg}")
            }
            _ => anyhow!("{msg}"),
        }
    })
}

/// Reads the `DCUPGRADE_*` variables through `get` (`std::env::var` in the program).
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let v = |key: &str| get(&env_name(key)).filter(|s| !s.is_empty());
    fn parse<T>(
        key: &str,
        val: Option<String>,
        what: &str,
        f: fn(&str) -> Option<T>,
    ) -> Result<Option<T>> {
        match val {
            None => Ok(None),
            Some(s) => f(s.trim())
                .map(Some)
                .ok_or_else(|| anyhow!("{}: expected {what}, got {s:?}", env_name(key))),
        }
    }
    let path = |s: &str| Some(PathBuf::from(s));
    let ms = |s: &str| s.parse::<u64>().ok();
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    const MS: &str = "a whole number of milliseconds";
    const ADDR: &str = "a socket address IP:PORT such as 127.0.0.1:7000";
    fn list(s: &str) -> Option<Vec<String>> {
        Some(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )
    }
    fn value_enum<T: clap::ValueEnum>(s: &str) -> Option<T> {
        T::from_str(s, false).ok()
    }
    Ok(Settings {
        state: parse("state", v("state"), "a path", path)?,
        feed: parse("feed", v("feed"), "a path", path)?,
        chain: parse("chain", v("chain"), "comma-separated URLs", list)?,
        chain_poll_ms: parse("chain_poll_ms", v("chain_poll_ms"), MS, ms)?,
        listen: parse("listen", v("listen"), ADDR, addr)?,
        node_data: parse("node_data", v("node_data"), "a path", path)?,
        node_listen: parse("node_listen", v("node_listen"), ADDR, addr)?,
        node_upgrade: parse("node_upgrade", v("node_upgrade"), ADDR, addr)?,
        launcher: parse(
            "launcher",
            v("launcher"),
            "one of sim, gramine, broker",
            value_enum,
        )?,
        switch: parse(
            "switch",
            v("switch"),
            "one of make-before-break, break-before-make",
            value_enum,
        )?,
        sim_bin: parse("sim_bin", v("sim_bin"), "a path", path)?,
        platform_state: parse("platform_state", v("platform_state"), "a path", path)?,
        gramine_bin: parse("gramine_bin", v("gramine_bin"), "a path", path)?,
        broker: parse("broker", v("broker"), ADDR, addr)?,
        initial_bundle: parse("initial_bundle", v("initial_bundle"), "a path", path)?,
        initial_record: parse("initial_record", v("initial_record"), "a path", path)?,
        agent_record: parse("agent_record", v("agent_record"), "a path", path)?,
        download_ca: parse(
            "download_ca",
            v("download_ca"),
            "comma-separated paths",
            |s| list(s).map(|l| l.into_iter().map(PathBuf::from).collect()),
        )?,
        chain_ca: parse("chain_ca", v("chain_ca"), "comma-separated paths", |s| {
            list(s).map(|l| l.into_iter().map(PathBuf::from).collect())
        })?,
        poll_ms: parse("poll_ms", v("poll_ms"), MS, ms)?,
        retry_backoff_ms: parse("retry_backoff_ms", v("retry_backoff_ms"), MS, ms)?,
        node_ready_ms: parse("node_ready_ms", v("node_ready_ms"), MS, ms)?,
        handover_ms: parse("handover_ms", v("handover_ms"), MS, ms)?,
        health_ms: parse("health_ms", v("health_ms"), MS, ms)?,
        log_format: parse(
            "log_format",
            v("log_format"),
            "one of text, json",
            value_enum,
        )?,
    })
}

impl Settings {
    /// `self` where it sets a value, else `lower`: the precedence of one layer over another.
    pub fn over(self, lower: Settings) -> Settings {
        Settings {
            state: self.state.or(lower.state),
            feed: self.feed.or(lower.feed),
            chain: self.chain.filter(|c| !c.is_empty()).or(lower.chain),
            chain_poll_ms: self.chain_poll_ms.or(lower.chain_poll_ms),
            listen: self.listen.or(lower.listen),
            node_data: self.node_data.or(lower.node_data),
            node_listen: self.node_listen.or(lower.node_listen),
            node_upgrade: self.node_upgrade.or(lower.node_upgrade),
            launcher: self.launcher.or(lower.launcher),
            switch: self.switch.or(lower.switch),
            sim_bin: self.sim_bin.or(lower.sim_bin),
            platform_state: self.platform_state.or(lower.platform_state),
            gramine_bin: self.gramine_bin.or(lower.gramine_bin),
            broker: self.broker.or(lower.broker),
            initial_bundle: self.initial_bundle.or(lower.initial_bundle),
            initial_record: self.initial_record.or(lower.initial_record),
            agent_record: self.agent_record.or(lower.agent_record),
            download_ca: self
                .download_ca
                .filter(|c| !c.is_empty())
                .or(lower.download_ca),
            chain_ca: self.chain_ca.filter(|c| !c.is_empty()).or(lower.chain_ca),
            poll_ms: self.poll_ms.or(lower.poll_ms),
            retry_backoff_ms: self.retry_backoff_ms.or(lower.retry_backoff_ms),
            node_ready_ms: self.node_ready_ms.or(lower.node_ready_ms),
            handover_ms: self.handover_ms.or(lower.handover_ms),
            health_ms: self.health_ms.or(lower.health_ms),
            log_format: self.log_format.or(lower.log_format),
        }
    }

    /// Fills in the defaults and checks what must be set.
    pub fn resolve(self) -> Result<RunConfig> {
        let missing = |key: &str| {
            anyhow!(
                "`{key}` is not set: give --{} or `{key}` in the config file or {}",
                key.replace('_', "-"),
                env_name(key)
            )
        };
        let launcher = self.launcher.unwrap_or_default();
        if launcher == LauncherKind::Sim {
            if self.sim_bin.is_none() {
                return Err(missing("sim_bin")).context("the `sim` launcher needs it");
            }
            if self.platform_state.is_none() {
                return Err(missing("platform_state")).context("the `sim` launcher needs it");
            }
        }
        if self.initial_bundle.is_some() != self.initial_record.is_some() {
            bail!("`initial_bundle` and `initial_record` go together");
        }
        let chain = self.chain.unwrap_or_default();
        if self.feed.is_none() && chain.is_empty() {
            bail!(
                "no release source: set `feed` and/or `chain` (--feed DIR, --chain ws://HOST:PORT)"
            );
        }
        let addr =
            |a: Option<SocketAddr>, d: &str| a.unwrap_or_else(|| d.parse().expect("default"));
        Ok(RunConfig {
            state: self.state.ok_or_else(|| missing("state"))?,
            feed: self.feed,
            chain,
            chain_poll_ms: self.chain_poll_ms.unwrap_or(6000),
            listen: addr(self.listen, "127.0.0.1:6666"),
            node_data: self.node_data.ok_or_else(|| missing("node_data"))?,
            node_listen: addr(self.node_listen, "127.0.0.1:7000"),
            node_upgrade: addr(self.node_upgrade, "127.0.0.1:6667"),
            launcher,
            switch: self.switch.unwrap_or_default(),
            sim_bin: self.sim_bin,
            platform_state: self.platform_state,
            gramine_bin: self.gramine_bin.unwrap_or_else(|| "gramine-sgx".into()),
            broker: addr(self.broker, "127.0.0.1:6668"),
            initial_bundle: self.initial_bundle,
            initial_record: self.initial_record,
            agent_record: self.agent_record,
            download_ca: self.download_ca.unwrap_or_default(),
            chain_ca: self.chain_ca.unwrap_or_default(),
            poll_ms: self.poll_ms.unwrap_or(500),
            retry_backoff_ms: self.retry_backoff_ms.unwrap_or(60_000),
            node_ready_ms: self.node_ready_ms.unwrap_or(30_000),
            handover_ms: self.handover_ms.unwrap_or(30_000),
            health_ms: self.health_ms.unwrap_or(15_000),
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

/// The precedence, in one place: flags over the environment over the file over the defaults.
pub fn layered(file: Settings, env: Settings, flags: Settings) -> Result<RunConfig> {
    flags.over(env.over(file)).resolve()
}

/// What `run` and `config check` do: the file (if any), the process environment, the flags.
pub fn effective(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: Settings,
) -> Result<RunConfig> {
    let file = match file {
        Some(p) => load_file(p)?,
        None => Settings::default(),
    };
    layered(file, from_env(env)?, flags)
}

/// Socket addresses in the file: strings `IP:PORT`, refused with what is expected.
mod opt_addr {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        a: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SocketAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a socket address string \"IP:PORT\" such as \"127.0.0.1:7000\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SocketAddr, E> {
                v.parse().map_err(|_| {
                    E::custom(format!(
                        "expected a socket address \"IP:PORT\" such as \"127.0.0.1:7000\", got {v:?}"
                    ))
                })
            }
        }
        d.deserialize_str(V).map(Some)
    }
}

fn ser_addr<S: serde::Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = r#"
state = "/var/lib/dcupgrade"
chain = ["ws://127.0.0.1:9944"]
node_data = "/var/lib/dcnode"
node_listen = "127.0.0.1:7100"
launcher = "broker"
poll_ms = 750
"#;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn eff(file: &str, vars: &[(&str, &str)], flags: Settings) -> Result<RunConfig> {
        layered(parse_file(file)?, from_env(&env(vars))?, flags)
    }

    #[test]
    fn file_only() {
        let c = eff(FILE, &[], Settings::default()).unwrap();
        assert_eq!(c.state, PathBuf::from("/var/lib/dcupgrade"));
        assert_eq!(c.chain, vec!["ws://127.0.0.1:9944".to_string()]);
        assert_eq!(c.node_listen, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(c.launcher, LauncherKind::Broker);
        assert_eq!(c.poll_ms, 750);
        // Defaults for what the file leaves out.
        assert_eq!(c.listen, "127.0.0.1:6666".parse().unwrap());
        assert_eq!(c.health_ms, 15_000);
        assert_eq!(c.switch, SwitchArg::MakeBeforeBreak);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn env_over_file() {
        let c = eff(
            FILE,
            &[
                ("DCUPGRADE_NODE_LISTEN", "127.0.0.1:7200"),
                ("DCUPGRADE_POLL_MS", "900"),
                ("DCUPGRADE_CHAIN", "ws://a:1, ws://b:2"),
                ("DCUPGRADE_LOG_FORMAT", "json"),
            ],
            Settings::default(),
        )
        .unwrap();
        assert_eq!(c.node_listen, "127.0.0.1:7200".parse().unwrap());
        assert_eq!(c.poll_ms, 900);
        assert_eq!(c.chain, vec!["ws://a:1".to_string(), "ws://b:2".into()]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.launcher, LauncherKind::Broker, "the file still applies");
    }

    #[test]
    fn flag_over_env_and_file() {
        let flags = Settings {
            node_listen: Some("127.0.0.1:7300".parse().unwrap()),
            poll_ms: Some(1000),
            ..Settings::default()
        };
        let c = eff(
            FILE,
            &[
                ("DCUPGRADE_NODE_LISTEN", "127.0.0.1:7200"),
                ("DCUPGRADE_POLL_MS", "900"),
                ("DCUPGRADE_HEALTH_MS", "5000"),
            ],
            flags,
        )
        .unwrap();
        assert_eq!(c.node_listen, "127.0.0.1:7300".parse().unwrap());
        assert_eq!(c.poll_ms, 1000);
        assert_eq!(c.health_ms, 5000, "the environment still applies");
        assert_eq!(c.state, PathBuf::from("/var/lib/dcupgrade"));
    }

    #[test]
    fn keys_lists_every_setting() {
        let mut text = String::new();
        for k in KEYS {
            let v = match *k {
                "chain" | "download_ca" | "chain_ca" => "[\"x\"]",
                k if k.ends_with("_ms") => "1",
                "listen" | "node_listen" | "node_upgrade" | "broker" => "\"127.0.0.1:1\"",
                "launcher" => "\"sim\"",
                "switch" => "\"break-before-make\"",
                "log_format" => "\"json\"",
                _ => "\"/p\"",
            };
            text.push_str(&format!("{k} = {v}\n"));
        }
        let s = parse_file(&text).unwrap();
        let back: toml::Table = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.len(), KEYS.len(), "{back:?}");
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = parse_file("state = \"/x\"\nnode_lisen = \"127.0.0.1:7000\"\n").unwrap_err();
        let m = format!("{e:#}");
        assert!(m.contains("unknown field `node_lisen`"), "{m}");
    }

    #[test]
    fn bad_values_are_refused_with_key_and_expectation() {
        let m = format!(
            "{:#}",
            parse_file("state = \"/x\"\nnode_listen = \"nope\"\n").unwrap_err()
        );
        assert!(m.contains("node_listen"), "{m}");
        assert!(m.contains("IP:PORT"), "{m}");
        let m = format!("{:#}", parse_file("poll_ms = \"soon\"\n").unwrap_err());
        assert!(m.contains("poll_ms") && m.contains("u64"), "{m}");
        let m = format!("{:#}", parse_file("launcher = \"docker\"\n").unwrap_err());
        assert!(m.contains("launcher") && m.contains("broker"), "{m}");
        let m = format!(
            "{:#}",
            from_env(&env(&[("DCUPGRADE_POLL_MS", "soon")])).unwrap_err()
        );
        assert!(
            m.contains("DCUPGRADE_POLL_MS") && m.contains("milliseconds"),
            "{m}"
        );
    }

    #[test]
    fn missing_required_settings_are_named() {
        let m = format!(
            "{:#}",
            eff("feed = \"/f\"\n", &[], Settings::default()).unwrap_err()
        );
        assert!(m.contains("sim_bin"), "{m}");
        let m = format!(
            "{:#}",
            eff(
                "feed = \"/f\"\nlauncher = \"gramine\"\n",
                &[],
                Settings::default()
            )
            .unwrap_err()
        );
        assert!(
            m.contains("`state`") && m.contains("DCUPGRADE_STATE"),
            "{m}"
        );
    }

    #[test]
    fn the_effective_configuration_prints_as_a_config_file() {
        let c = eff(
            FILE,
            &[("DCUPGRADE_LOG_FORMAT", "json")],
            Settings::default(),
        )
        .unwrap();
        let again = eff(&c.to_toml(), &[], Settings::default()).unwrap();
        assert_eq!(c, again);
    }

    /// The README's example (its only ```toml block in "Configuration") and the deploy
    /// example parse, and are complete: every key is set in the README's.
    #[test]
    fn readme_and_deploy_examples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Configuration section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("\n```").next())
            .expect("a ```toml block in README's Configuration section");
        let s = parse_file(block).unwrap_or_else(|e| panic!("README example: {e:#}"));
        let c = layered(s.clone(), Settings::default(), Settings::default()).unwrap();
        assert_eq!(
            c.launcher,
            LauncherKind::Broker,
            "the README shows the SGX setup"
        );
        // Complete: every key appears, set or as a commented-out line.
        for k in KEYS {
            assert!(
                block.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{k} ="))),
                "the README example does not show `{k}`"
            );
        }
        let deploy = root.join("deploy/systemd/dcupgrade.toml");
        let s = load_file(&deploy).unwrap_or_else(|e| panic!("{e:#}"));
        layered(s, Settings::default(), Settings::default()).unwrap();
    }
}
