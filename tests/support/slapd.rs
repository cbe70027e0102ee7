//! A real OpenLDAP `slapd` (mdb backend, seeded with `slapadd`) on free loopback ports in its own
//! temp dir, killed on drop. It allows unauthenticated binds (`allow bind_anon_dn`) on purpose, so
//! tests prove that authgate itself refuses empty passwords. Only the service account may read
//! entries, so a search that ran on a connection bound as a user would find nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, which};

pub const BASE: &str = "dc=example,dc=org";
pub const SERVICE_DN: &str = "cn=authgate,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-secret";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";

/// A seeded user: uid, password (None: the entry has no userPassword), mail, cn.
pub struct LdapUser {
    pub uid: &'static str,
    pub password: Option<&'static str>,
    pub mail: Option<&'static str>,
    pub cn: &'static str,
}

/// The uid with RFC 4515 metacharacters and quotes.
pub const ODD_UID: &str = "o'brien(test)*";
/// A uid holding a double quote and a backslash, which its DN must escape.
pub const QUOTE_UID: &str = "q\"uote\\back";
/// The base32 secret stored in `tina`'s `description`.
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// Users named `user01`..`user32` exist for concurrency tests, password `pw-userNN`.
pub const NUMBERED_USERS: usize = 32;

pub fn users() -> Vec<LdapUser> {
    vec![
        LdapUser {
            uid: "alice",
            password: Some("alice-ldap-pw"),
            mail: Some("alice@example.org"),
            cn: "Alice Liddell",
        },
        LdapUser {
            uid: "erin",
            password: Some("erin-ldap-pw"),
            mail: Some("Erin@Example.org"),
            cn: "Erin Example",
        },
        LdapUser {
            uid: "frank",
            password: Some("frank-ldap-pw"),
            mail: None,
            cn: "Frank Plain",
        },
        LdapUser {
            uid: ODD_UID,
            password: Some("odd-ldap-pw"),
            mail: None,
            cn: "Odd O'Brien",
        },
        LdapUser {
            uid: QUOTE_UID,
            password: Some("quote-ldap-pw"),
            mail: None,
            cn: "Quote Back",
        },
        LdapUser {
            uid: "nopass",
            password: None,
            mail: None,
            cn: "No Password",
        },
        LdapUser {
            uid: "spacey",
            password: Some("   "),
            mail: None,
            cn: "Spacey",
        },
        // Two entries share this mail: logging in with it is ambiguous.
        LdapUser {
            uid: "twin1",
            password: Some("twin-pw"),
            mail: Some("twins@example.org"),
            cn: "Twin One",
        },
        LdapUser {
            uid: "twin2",
            password: Some("twin-pw"),
            mail: Some("twins@example.org"),
            cn: "Twin Two",
        },
    ]
}

/// The RFC 4514 form of `uid=<uid>` under ou=people.
pub fn user_dn(uid: &str) -> String {
    let mut v = String::new();
    for c in uid.chars() {
        if matches!(c, '"' | '\\' | ',' | '+' | ';' | '<' | '>' | '=') {
            v.push('\\');
        }
        v.push(c);
    }
    format!("uid={v},{PEOPLE}")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// LDIF `attr: value`, base64-encoded when the value is not LDIF-safe.
fn line(attr: &str, value: &str) -> String {
    let safe = !value.is_empty()
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ')
        && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if safe {
        format!("{attr}: {value}\n")
    } else {
        format!("{attr}:: {}\n", b64(value))
    }
}

fn seed_ldif() -> String {
    let mut s = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: authgate\nuserPassword: {SERVICE_PASSWORD}\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let mut all: Vec<(String, Option<String>, Option<&str>, String)> = users()
        .into_iter()
        .map(|u| {
            (
                u.uid.to_string(),
                u.password.map(String::from),
                u.mail,
                u.cn.to_string(),
            )
        })
        .collect();
    for i in 1..=NUMBERED_USERS {
        all.push((
            format!("user{i:02}"),
            Some(format!("pw-user{i:02}")),
            None,
            format!("User {i:02}"),
        ));
    }
    for (uid, password, mail, cn) in &all {
        s.push_str(&line("dn", &user_dn(uid)));
        s.push_str("objectClass: inetOrgPerson\n");
        s.push_str(&line("uid", uid));
        s.push_str(&line("cn", cn));
        s.push_str(&line("sn", cn));
        s.push_str(&line("displayName", &format!("{cn} (display)")));
        if let Some(m) = mail {
            s.push_str(&line("mail", m));
        }
        if let Some(p) = password {
            s.push_str(&line("userPassword", p));
        }
        s.push('\n');
    }
    // A TOTP secret kept in an ordinary attribute, for `[directory.ldap.attributes] totp_secret`.
    s.push_str(&format!(
        "dn: {}\nobjectClass: inetOrgPerson\nuid: tina\ncn: Tina Totp\nsn: Totp\nuserPassword: tina-ldap-pw\ndescription: {TOTP_SECRET}\n\n",
        user_dn("tina")
    ));
    let groups: [(&str, Vec<String>); 3] = [
        ("chat-admins", vec![user_dn("alice")]),
        ("moderators", vec![user_dn("alice"), user_dn("erin")]),
        ("staff", vec![user_dn(ODD_UID), user_dn(QUOTE_UID)]),
    ];
    for (cn, members) in groups {
        s.push_str(&format!(
            "dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n"
        ));
        for m in members {
            s.push_str(&line("member", &m));
        }
        s.push('\n');
    }
    s
}

/// Active Directory's account-state attributes (with AD's OIDs), on an auxiliary class
/// `adAccount`, so entries can be expired, locked out or disabled as AD marks them.
const AD_ACCOUNT_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.159 NAME 'accountExpires' EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.662 NAME 'lockoutTime' EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.1.1 NAME 'adAccount' SUP top AUXILIARY MAY ( userAccountControl $ accountExpires $ lockoutTime ) )
";

#[derive(Default, Clone)]
pub struct SlapdOptions {
    /// Also listen on ldaps:// and allow StartTLS, with a certificate from a generated CA.
    pub tls: bool,
    /// slapd's `idletimeout`: it closes connections idle this many seconds.
    pub idle_timeout_secs: Option<u32>,
    /// Another directory than the one above, e.g. docker/'s seed and ACL.
    pub directory: Option<CustomDirectory>,
    /// Log every operation (`-d stats`), for `simple_binds_as`.
    pub log_operations: bool,
}

/// The slapd.conf `access` lines and the LDIF (base entry included) of a directory under the
/// same suffix; the rootdn stays `cn=admin,dc=example,dc=org` with password "admin-secret".
#[derive(Clone)]
pub struct CustomDirectory {
    pub access: String,
    pub ldif: String,
}

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    pub tls_port: u16,
    dir: tempfile::TempDir,
    opts: SlapdOptions,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let openssl = which("openssl");
    let p = |f: &str| dir.join(f);
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    for (name, subject) in [
        ("ca", "/CN=authgate test CA"),
        ("other-ca", "/CN=unrelated CA"),
    ] {
        run(
            Command::new(&openssl)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    subject,
                ])
                .args([
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ])
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.pem"))),
            "openssl req (CA)",
        );
    }
    run(
        Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
        "openssl req (server)",
    );
    run(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.pem")),
        "openssl x509 (server)",
    );
}

impl Slapd {
    pub fn start() -> Slapd {
        Slapd::start_with(SlapdOptions::default())
    }

    pub fn start_with(opts: SlapdOptions) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        if opts.tls {
            make_certs(d);
        }
        let mut conf = String::new();
        for schema in ["core", "cosine", "inetorgperson", "nis"] {
            conf.push_str(&format!("include /etc/ldap/schema/{schema}.schema\n"));
        }
        std::fs::write(d.join("ad-account.schema"), AD_ACCOUNT_SCHEMA).unwrap();
        conf.push_str(&format!("include {}/ad-account.schema\n", d.display()));
        conf.push_str(&format!(
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {0}/slapd.pid\nargsfile {0}/slapd.args\n\
             allow bind_anon_dn\n",
            d.display()
        ));
        if let Some(secs) = opts.idle_timeout_secs {
            conf.push_str(&format!("idletimeout {secs}\n"));
        }
        if opts.tls {
            conf.push_str(&format!(
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/server.pem\nTLSCertificateKeyFile {0}/server.key\n",
                d.display()
            ));
        }
        conf.push_str(&format!(
            "database mdb\nmaxsize 16777216\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\nrootpw admin-secret\n\
             directory {}/db\n",
            d.display()
        ));
        match &opts.directory {
            Some(custom) => {
                conf.push_str(&custom.access);
                std::fs::write(d.join("seed.ldif"), &custom.ldif).unwrap();
            }
            None => {
                conf.push_str(&format!(
                    "access to attrs=userPassword by anonymous auth by * none\n\
                     access to * by dn.exact=\"{SERVICE_DN}\" read by * none\n"
                ));
                std::fs::write(d.join("seed.ldif"), seed_ldif()).unwrap();
            }
        }
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        run(
            Command::new(which("slapadd"))
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-l")
                .arg(d.join("seed.ldif")),
            "slapadd",
        );
        let mut s = Slapd {
            child: None,
            port: 0,
            tls_port: 0,
            dir,
            opts,
        };
        for _ in 0..5 {
            s.port = free_port();
            s.tls_port = if s.opts.tls { free_port() } else { 0 };
            if s.spawn() {
                return s;
            }
        }
        panic!("slapd did not start: {}", s.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> bool {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if self.opts.tls {
            urls.push_str(&format!(" ldaps://127.0.0.1:{}/", self.tls_port));
        }
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        // `-d 0` keeps slapd in the foreground, so it is our child and dies with `kill`.
        let debug = if self.opts.log_operations {
            "stats"
        } else {
            "0"
        };
        let child = Command::new(which("slapd"))
            .args(["-d", debug, "-h", &urls, "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(30)) {
            return true;
        }
        self.kill();
        false
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            // The rootdn binds whatever the ACL says.
            if self
                .whoami(&format!("cn=admin,{BASE}"), "admin-secret")
                .is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The CA that signed the server certificate (TLS servers only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign it.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// `ldapwhoami -x -D dn -w password` against the plain port: the identity slapd bound, or
    /// its error output.
    pub fn whoami(&self, dn: &str, password: &str) -> Result<String, String> {
        let out = Command::new(which("ldapwhoami"))
            .args([
                "-x",
                "-o",
                "nettimeout=2",
                "-H",
                &self.url(),
                "-D",
                dn,
                "-w",
                password,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// A `[directory.ldap]` section for this server (openldap preset, roles from its groups),
    /// followed by `extra` lines inside the same table.
    pub fn directory_toml(&self, extra: &str) -> String {
        format!(
            "[directory.ldap]\nurl = \"{}\"\nbind_dn = \"{SERVICE_DN}\"\nbind_password = \"{SERVICE_PASSWORD}\"\n\
             user_base = \"{PEOPLE}\"\ngroup_base = \"{GROUPS}\"\n{extra}\n\n\
             [directory.ldap.roles]\nadmin = [\"CN=Chat-Admins, ou=groups,dc=example,dc=org\"]\n\
             moderator = [\"cn=moderators,{GROUPS}\"]\nstaff = [\"cn=staff,{GROUPS}\"]\n",
            self.url()
        )
    }

    /// One attribute of one entry, read as the service account with `ldapsearch`.
    pub fn attribute(&self, dn: &str, attr: &str) -> Option<String> {
        let out = Command::new(which("ldapsearch"))
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url(),
                "-D",
                SERVICE_DN,
                "-w",
                SERVICE_PASSWORD,
                "-s",
                "base",
                "-b",
                dn,
                attr,
            ])
            .output()
            .expect("ldapsearch");
        assert!(
            out.status.success(),
            "ldapsearch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{attr}: ");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    /// How many simple binds slapd received for `dn` (needs `log_operations`).
    pub fn simple_binds_as(&self, dn: &str) -> usize {
        let needle = format!("bind dn=\"{}\" method=128", dn.to_lowercase());
        self.log()
            .lines()
            .filter(|l| l.to_lowercase().contains(&needle))
            .count()
    }

    /// Applies an LDIF change record (`changetype: modify` ...) as the rootdn.
    pub fn modify(&self, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new(which("ldapmodify"))
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                &format!("cn=admin,{BASE}"),
                "-w",
                "admin-secret",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes an entry as the rootdn.
    pub fn delete(&self, dn: &str) {
        run(
            Command::new(which("ldapdelete")).args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                &format!("cn=admin,{BASE}"),
                "-w",
                "admin-secret",
                dn,
            ]),
            "ldapdelete",
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports with the same data (after `kill`).
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "slapd did not come back on port {}: {}",
            self.port,
            self.log()
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}
