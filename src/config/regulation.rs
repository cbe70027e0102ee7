//! `[regulation]`: brute-force blocking. The defaults are Rocket.Chat's own
//! (`Block_Multiple_Failed_Logins_*`: 10 failures per user, 50 per IP, 5 minutes each), so a
//! client sees the blocking it would see from Rocket.Chat; README.md describes the semantics.

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::problem::{count_or, duration_or, problem, ConfigProblem};

#[derive(Debug, Default, Deserialize)]
pub struct RawRegulation {
    pub enabled: Option<bool>,
    pub user_failures: Option<i64>,
    pub user_block: Option<String>,
    pub ip_failures: Option<i64>,
    pub ip_block: Option<String>,
    pub ip_allowlist: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct RegulationConfig {
    pub enabled: bool,
    /// Failures within `user_block` that block a login name; 0 = never.
    pub user_failures: u64,
    pub user_block: Duration,
    pub ip_failures: u64,
    pub ip_block: Duration,
    pub ip_allowlist: Vec<IpNet>,
}

pub fn validate(raw: RawRegulation, problems: &mut Vec<ConfigProblem>) -> RegulationConfig {
    let min = Duration::from_millis(100);
    let mut ip_allowlist = Vec::new();
    for (i, entry) in raw.ip_allowlist.unwrap_or_default().iter().enumerate() {
        match entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => ip_allowlist.push(net),
            Err(_) => problems.push(problem(
                &format!("regulation.ip_allowlist[{i}]"),
                format!("`{entry}` is not an IP address or CIDR"),
                "write entries like \"192.0.2.7\" or \"10.0.0.0/8\"",
            )),
        }
    }
    RegulationConfig {
        enabled: raw.enabled.unwrap_or(true),
        user_failures: count_or(
            "regulation.user_failures",
            raw.user_failures,
            10,
            0,
            100,
            problems,
        ) as u64,
        user_block: duration_or(
            "regulation.user_block",
            raw.user_block.as_ref(),
            Duration::from_secs(300),
            min,
            problems,
        ),
        ip_failures: count_or(
            "regulation.ip_failures",
            raw.ip_failures,
            50,
            0,
            1_000_000,
            problems,
        ) as u64,
        ip_block: duration_or(
            "regulation.ip_block",
            raw.ip_block.as_ref(),
            Duration::from_secs(300),
            min,
            problems,
        ),
        ip_allowlist,
    }
}
