//! Account states in which the directory server refuses a bind, read from the user's entry, so
//! that a session ends when its account is expired, locked out or disabled, as a new login would
//! fail. A session is revalidated without the user's password, so the entry is all there is.
//!
//! Read wherever the entry has them, whatever the preset: Active Directory's
//! `userAccountControl` (ACCOUNTDISABLE), `accountExpires`, `lockoutTime` and
//! `msDS-User-Account-Control-Computed` (LOCKOUT, PASSWORD_EXPIRED); 389-DS / FreeIPA's
//! `nsAccountLock`; OpenLDAP ppolicy's `pwdAccountLockedTime`.

use std::time::{SystemTime, UNIX_EPOCH};

use ldap3::SearchEntry;

/// The attributes every user search asks for on top of the identity ones (servers that do not
/// know an attribute simply return nothing for it).
pub const ATTRIBUTES: [&str; 6] = [
    "userAccountControl",
    "accountExpires",
    "lockoutTime",
    "msDS-User-Account-Control-Computed",
    "nsAccountLock",
    "pwdAccountLockedTime",
];

const UF_ACCOUNTDISABLE: i64 = 0x2;
const UF_LOCKOUT: i64 = 0x10;
const UF_PASSWORD_EXPIRED: i64 = 0x80_0000;
/// `accountExpires` values meaning "never".
const NEVER: [i64; 2] = [0, i64::MAX];
/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: i64 = 11_644_473_600;

/// When to judge lockouts: at login the bind has just decided (the server knows how long a
/// lockout lasts and clears `lockoutTime` on the next good bind); on revalidation there is no
/// bind, so any recorded lockout ends the session (the user logs in again once it lapses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    AfterBind,
    Revalidation,
}

fn integer(entry: &SearchEntry, attr: &str) -> Option<i64> {
    super::entry::first_text(entry, attr).and_then(|v| v.parse().ok())
}

/// Now as a Windows FILETIME (100 ns intervals since 1601).
fn filetime_now() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    (unix + FILETIME_UNIX_OFFSET_SECS) * 10_000_000
}

/// Why the server would refuse this account a bind, or None when nothing in the entry says so.
pub fn refusal(entry: &SearchEntry, moment: Moment) -> Option<&'static str> {
    if integer(entry, "userAccountControl").is_some_and(|uac| uac & UF_ACCOUNTDISABLE != 0) {
        return Some("disabled");
    }
    if super::entry::first_text(entry, "nsAccountLock")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Some("disabled");
    }
    if integer(entry, "accountExpires")
        .is_some_and(|at| !NEVER.contains(&at) && at <= filetime_now())
    {
        return Some("expired");
    }
    let computed = integer(entry, "msDS-User-Account-Control-Computed");
    if computed.is_some_and(|c| c & UF_PASSWORD_EXPIRED != 0) {
        return Some("password expired");
    }
    if moment == Moment::AfterBind {
        return None;
    }
    let locked = match computed {
        // Computed by AD with the domain's lockout duration: exact.
        Some(c) => c & UF_LOCKOUT != 0,
        None => {
            integer(entry, "lockoutTime").is_some_and(|t| t > 0)
                || super::entry::first_text(entry, "pwdAccountLockedTime").is_some()
        }
    };
    locked.then_some("locked out")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "cn=x".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn states_the_server_refuses_a_bind_in() {
        let past = (filetime_now() - 36_000_000_000).to_string();
        let future = (filetime_now() + 36_000_000_000).to_string();
        let r = |attrs: &[(&str, &str)]| refusal(&entry(attrs), Moment::Revalidation);
        assert_eq!(r(&[]), None);
        assert_eq!(r(&[("userAccountControl", "512")]), None);
        assert_eq!(r(&[("userAccountControl", "514")]), Some("disabled"));
        assert_eq!(r(&[("nsAccountLock", "TRUE")]), Some("disabled"));
        assert_eq!(r(&[("accountExpires", &past)]), Some("expired"));
        assert_eq!(r(&[("accountExpires", &future)]), None);
        assert_eq!(r(&[("accountExpires", "0")]), None);
        assert_eq!(r(&[("accountExpires", "9223372036854775807")]), None);
        assert_eq!(r(&[("lockoutTime", "0")]), None);
        assert_eq!(r(&[("lockoutTime", &past)]), Some("locked out"));
        assert_eq!(
            r(&[("pwdAccountLockedTime", "000001010000Z")]),
            Some("locked out")
        );
        // AD's computed flags win over a stale lockoutTime.
        assert_eq!(
            r(&[
                ("lockoutTime", &past),
                ("msDS-User-Account-Control-Computed", "0")
            ]),
            None
        );
        assert_eq!(
            r(&[("msDS-User-Account-Control-Computed", "16")]),
            Some("locked out")
        );
        assert_eq!(
            r(&[("msDS-User-Account-Control-Computed", "8388608")]),
            Some("password expired")
        );
        // Right after a good bind a recorded lockout is the server's to judge.
        assert_eq!(
            refusal(&entry(&[("lockoutTime", &past)]), Moment::AfterBind),
            None
        );
    }
}
