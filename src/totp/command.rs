//! `authgate totp enroll|disable USER`: edits the enrollment store, then revokes the user's
//! sessions so that every login from now on goes through the new rule.

use std::process::ExitCode;

use clap::Subcommand;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use rand::RngCore;
use totp_rs::Secret;

use super::enrollment::{self, Enrollment, StoreLock};
use crate::cli::common::{
    block_on, exit_with, find_in_ldap, load_config, ConfigArg, Failure, EXIT_RUNTIME, EXIT_USAGE,
};
use crate::config::{Config, StoreKind};
use crate::directory::fold;

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Give USER a fresh TOTP secret: prints the otpauth:// URI, the secret and a QR code.
    /// Running gateways require a code from USER's next login on.
    Enroll(TotpArgs),
    /// Remove USER's enrollment: their logins need only the password again.
    Disable(TotpArgs),
}

#[derive(Debug, clap::Args)]
pub struct TotpArgs {
    /// The user's username (or, for a users-file user, their email).
    pub user: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Leave the user's existing sessions alone (by default they are revoked).
    #[arg(long)]
    pub keep_sessions: bool,
    /// The user's id (the `userId` logins return): when given, it must match the id the
    /// directory holds for USER, a guard against enrolling the wrong account.
    #[arg(long)]
    pub user_id: Option<String>,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure(EXIT_USAGE, msg.into())
}

/// Who the command is about: the enrollment key, the name shown in apps, and the id if known.
struct Target {
    key: String,
    display: String,
    user_id: String,
}

pub fn run(cmd: TotpCommand) -> ExitCode {
    let result = match cmd {
        TotpCommand::Enroll(args) => enroll(&args),
        TotpCommand::Disable(args) => disable(&args),
    };
    exit_with(result)
}

fn resolve(config: &Config, args: &TotpArgs, enrolling: bool) -> Result<Target, Failure> {
    let wanted = fold(&args.user);
    if wanted.is_empty() {
        return Err(usage("USER is empty"));
    }
    let local = match &config.directory.local {
        Some(l) => crate::directory::local::load_users(l)
            .map_err(|p| usage(p.iter().map(|p| format!("\n  - {p}")).collect::<String>()))?,
        None => Vec::new(),
    };
    let found = local.iter().find(|u| {
        fold(&u.profile.username) == wanted
            || u.profile.email.as_deref().map(fold) == Some(wanted.clone())
    });
    let Some(u) = found else {
        return resolve_in_ldap(config, args);
    };
    if u.totp_secret.is_some() {
        let what = if enrolling {
            "an enrollment would have no effect, because the users file wins"
        } else {
            "disable cannot remove it"
        };
        return Err(usage(format!(
            "{} has a totp_secret in the users file; {what}. Edit the users file instead \
             (and restart the gateway).",
            u.profile.username
        )));
    }
    if let Some(id) = &args.user_id {
        if *id != u.profile.id {
            return Err(usage(format!(
                "--user-id {id} does not match {}'s id {} in the users file",
                u.profile.username, u.profile.id
            )));
        }
    }
    Ok(Target {
        key: fold(&u.profile.username),
        display: u.profile.username.clone(),
        user_id: u.profile.id.clone(),
    })
}

/// A user the users file does not hold: only a user the LDAP directory finds can be enrolled,
/// so a typo never writes an enrollment nobody can use.
fn resolve_in_ldap(config: &Config, args: &TotpArgs) -> Result<Target, Failure> {
    let users_file = config
        .directory
        .local
        .as_ref()
        .map(|l| format!("the users file {}", l.users_file.display()))
        .unwrap_or_else(|| "any users file (none is configured)".into());
    if config.directory.ldap.is_none() {
        return Err(usage(format!(
            "no user `{}` in {users_file}, and no LDAP directory is configured; check the \
             spelling (give the username, or a users-file user's email)",
            args.user
        )));
    }
    let Some(profile) = block_on(find_in_ldap(config, &args.user))? else {
        return Err(usage(format!(
            "no user `{}` in {users_file} or the LDAP directory; check the spelling",
            args.user
        )));
    };
    if let Some(id) = &args.user_id {
        if *id != profile.id {
            return Err(usage(format!(
                "--user-id {id} does not match {}'s id {} in the LDAP directory",
                profile.username, profile.id
            )));
        }
    }
    Ok(Target {
        key: fold(&profile.username),
        display: profile.username,
        user_id: profile.id,
    })
}

fn prepare(args: &TotpArgs, enrolling: bool) -> Result<(Config, Target), Failure> {
    let config = load_config(&args.config).map_err(|e| usage(e.to_string()))?;
    let target = resolve(&config, args, enrolling)?;
    Ok((config, target))
}

fn enroll(args: &TotpArgs) -> Result<(), Failure> {
    let (config, target) = prepare(args, true)?;
    let mut raw = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let Secret::Encoded(secret) = Secret::Raw(raw.to_vec()).to_encoded() else {
        unreachable!("to_encoded always encodes");
    };
    let uri = super::otpauth_uri(&config.totp, &secret, &target.display)
        .map_err(|e| Failure(EXIT_RUNTIME, e))?;
    let qr = QrCode::new(uri.as_bytes())
        .map_err(|e| Failure(EXIT_RUNTIME, format!("cannot draw the QR code: {e}")))?
        .render::<Dense1x2>()
        // Inverted, like `qrencode -t UTF8`: scanners read it on a dark terminal background.
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let path = &config.totp.secrets_file;
    let enrollment = Enrollment {
        secret: secret.clone(),
        enrolled_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let replaced = update(path, |file| {
        (
            true,
            file.users.insert(target.key.clone(), enrollment).is_some(),
        )
    })?;
    let again = if replaced {
        " (its previous secret no longer works)"
    } else {
        ""
    };
    println!(
        "Enrolled {} for TOTP{again} in {}.",
        target.display,
        path.display()
    );
    println!("Add it to an authenticator app by scanning the QR code or entering the secret.");
    println!();
    println!("otpauth URI: {uri}");
    println!("Secret:      {secret}");
    println!();
    println!("{qr}");
    revoke(&config, args, &target)
}

fn disable(args: &TotpArgs) -> Result<(), Failure> {
    let (config, target) = prepare(args, false)?;
    let path = &config.totp.secrets_file;
    let removed = update(path, |file| {
        let removed = file.users.remove(&target.key).is_some();
        (removed, removed)
    })?;
    if !removed {
        println!(
            "{} is not enrolled in {}; nothing changed.",
            target.display,
            path.display()
        );
        return Ok(());
    }
    println!(
        "Disabled TOTP for {}: their logins need only the password now.",
        target.display
    );
    revoke(&config, args, &target)
}

/// Read-modify-write of the store under its lock; `change` says whether to write, and what to
/// return.
fn update<T>(
    path: &std::path::Path,
    change: impl FnOnce(&mut enrollment::EnrollmentFile) -> (bool, T),
) -> Result<T, Failure> {
    let runtime = |e: String| Failure(EXIT_RUNTIME, e);
    let _lock = StoreLock::acquire(path, std::time::Duration::from_secs(5)).map_err(runtime)?;
    let mut file = enrollment::read(path).map_err(usage)?;
    let (write, result) = change(&mut file);
    if write {
        enrollment::write(path, &file).map_err(runtime)?;
    }
    Ok(result)
}

fn revoke(config: &Config, args: &TotpArgs, target: &Target) -> Result<(), Failure> {
    if args.keep_sessions {
        println!("Existing sessions were kept (--keep-sessions).");
        return Ok(());
    }
    if config.session.store != StoreKind::Redis {
        eprintln!(
            "warning: session.store is \"memory\": sessions live inside the running gateway \
             process and cannot be revoked from here; restart the gateway to end {}'s sessions",
            target.display
        );
        return Ok(());
    }
    let user_id = &target.user_id;
    let not_revoked = |e: String| {
        Failure(
            EXIT_RUNTIME,
            format!(
                "the enrollment store was updated, but {}'s sessions could not be revoked \
                 ({e}); they stay valid until they expire or are revoked",
                target.display
            ),
        )
    };
    let revoked = block_on(async {
        let store =
            crate::session::build_store(&config.session).map_err(|e| not_revoked(e.to_string()))?;
        store
            .revoke_user(user_id)
            .await
            .map_err(|e| not_revoked(e.to_string()))
    })?;
    println!("Revoked {revoked} session(s) of {}.", target.display);
    Ok(())
}
