//! Reading attributes off a search entry, case-insensitively as LDAP names them: shared by the
//! directory and the account-state checks.

use ldap3::SearchEntry;

pub(super) fn values<'a>(
    entry: &'a SearchEntry,
    attr: &'a str,
) -> impl Iterator<Item = &'a String> {
    entry
        .attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter())
}

pub(super) fn first_text(entry: &SearchEntry, attr: &str) -> Option<String> {
    values(entry, attr)
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}
