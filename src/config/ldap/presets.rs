//! `preset`: the filters and attribute names each directory server family uses, as defaults for
//! the keys an operator leaves out.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapPreset {
    OpenLdap,
    ActiveDirectory,
    FreeIpa,
    Lldap,
}

/// The defaults a preset gives for the keys an operator leaves out.
pub(super) struct PresetDefaults {
    pub user_filter: &'static str,
    pub group_filter: &'static str,
    pub id: &'static str,
    pub username: &'static str,
    pub name: &'static str,
    pub email: &'static str,
}

impl LdapPreset {
    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "openldap" => LdapPreset::OpenLdap,
            "active-directory" => LdapPreset::ActiveDirectory,
            "freeipa" => LdapPreset::FreeIpa,
            "lldap" => LdapPreset::Lldap,
            _ => return None,
        })
    }

    pub(super) fn defaults(self) -> PresetDefaults {
        match self {
            LdapPreset::OpenLdap => PresetDefaults {
                user_filter: "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))",
                group_filter: "(&(objectClass=groupOfNames)(member={dn}))",
                id: "entryUUID",
                username: "uid",
                name: "cn",
                email: "mail",
            },
            // Disabled accounts (userAccountControl bit 2) are left out, so their sessions end too.
            LdapPreset::ActiveDirectory => PresetDefaults {
                user_filter: "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))(|(sAMAccountName={login})(userPrincipalName={login})(mail={login})))",
                group_filter: "(&(objectClass=group)(member={dn}))",
                id: "objectGUID",
                username: "sAMAccountName",
                name: "displayName",
                email: "mail",
            },
            LdapPreset::FreeIpa => PresetDefaults {
                user_filter: "(&(objectClass=inetOrgPerson)(!(nsAccountLock=TRUE))(|(uid={login})(mail={login})))",
                group_filter: "(&(objectClass=groupOfNames)(member={dn}))",
                id: "ipaUniqueID",
                username: "uid",
                name: "cn",
                email: "mail",
            },
            LdapPreset::Lldap => PresetDefaults {
                user_filter: "(&(objectClass=person)(|(uid={login})(mail={login})))",
                group_filter: "(&(objectClass=groupOfUniqueNames)(member={dn}))",
                id: "entryUUID",
                username: "uid",
                name: "cn",
                email: "mail",
            },
        }
    }
}
