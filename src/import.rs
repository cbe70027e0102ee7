//! `authgate import rocketchat USERS.json`: a users file from a Rocket.Chat users export
//! (`mongoexport` of the `users` collection, JSON lines or one array) that keeps every user's
//! id and password. Rocket.Chat stores bcrypt over the SHA-256 hex of the password, so the
//! entries say `password_prehash = "sha256"`: plain passwords are hashed first, and the digest
//! login form verifies directly.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::cli::common::{EXIT_RUNTIME, EXIT_USAGE};

#[derive(Debug, Serialize, PartialEq)]
pub struct ImportedUser {
    pub id: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub password_hash: String,
    pub password_prehash: String,
    pub roles: Vec<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
}

#[derive(Serialize)]
struct UsersFile {
    users: Vec<ImportedUser>,
}

/// The documents of an export: a JSON array, or one document per line.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed)
            .map_err(|e| format!("not a JSON array of users: {e}"));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// One export document as a users-file entry, or why it was skipped.
pub fn convert(doc: &Value) -> Result<ImportedUser, String> {
    let id = match &doc["_id"] {
        Value::String(s) => s.clone(),
        other => other
            .get("$oid")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or("no _id")?,
    };
    let username = doc["username"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("{id}: no username"))?
        .to_string();
    let hash = doc["services"]["password"]["bcrypt"]
        .as_str()
        .ok_or_else(|| format!("{username}: no password (SSO, bot or app user)"))?;
    let email = doc["emails"]
        .as_array()
        .and_then(|e| e.iter().find_map(|a| a["address"].as_str()))
        .map(str::to_string);
    let roles = doc["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| vec!["user".to_string()]);
    let totp = &doc["services"]["totp"];
    let totp_secret = (totp["enabled"] == Value::Bool(true))
        .then(|| totp["secret"].as_str().map(str::to_string))
        .flatten();
    Ok(ImportedUser {
        id,
        username,
        name: doc["name"].as_str().map(str::to_string),
        email,
        password_hash: hash.to_string(),
        password_prehash: "sha256".into(),
        roles,
        active: doc["active"].as_bool().unwrap_or(true),
        totp_secret,
    })
}

pub fn users_file(users: Vec<ImportedUser>) -> String {
    let header = "# Imported from a Rocket.Chat users export by `authgate import rocketchat`.\n\n";
    format!(
        "{header}{}",
        toml::to_string(&UsersFile { users }).expect("users serialize to TOML")
    )
}

pub fn run_rocketchat(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("authgate: cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let docs = match documents(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("authgate: {}: {e}", file.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut users = Vec::new();
    for doc in &docs {
        match convert(doc) {
            Ok(u) => users.push(u),
            Err(why) => eprintln!("authgate: skipped {why}"),
        }
    }
    eprintln!("authgate: imported {} of {} users", users.len(), docs.len());
    if users.is_empty() && !docs.is_empty() {
        return ExitCode::from(EXIT_RUNTIME);
    }
    print!("{}", users_file(users));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_convert_to_users_that_keep_id_and_password() {
        let lines = r#"{"_id":"Ab3dEfGhJkLmNpQr5","username":"alice","name":"Alice","emails":[{"address":"a@x.io","verified":true}],"roles":["user","admin"],"active":true,"services":{"password":{"bcrypt":"$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"},"totp":{"enabled":true,"secret":"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}}}
{"_id":"rocket.cat","username":"rocket.cat","type":"bot","services":{}}
"#;
        let docs = documents(lines).unwrap();
        assert_eq!(docs.len(), 2);
        let alice = convert(&docs[0]).unwrap();
        assert_eq!(alice.id, "Ab3dEfGhJkLmNpQr5");
        assert_eq!(alice.roles, ["user", "admin"]);
        assert_eq!(
            alice.totp_secret.as_deref(),
            Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        );
        assert!(convert(&docs[1]).is_err());
        let text = users_file(vec![alice]);
        assert!(
            text.contains("[[users]]") && text.contains("password_prehash = \"sha256\""),
            "{text}"
        );
        assert_eq!(documents("[]").unwrap().len(), 0);
    }
}
