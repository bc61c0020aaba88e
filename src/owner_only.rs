//! Files only their owner may read: the journal, its lock, and the secret
//! files (API key, console token, webhook secret).
//!
//! Unix: mode 0600 on create; a secret file with any group or other bit is
//! refused. Windows: a protected DACL (nothing inherited) granting full
//! access to the owner, SYSTEM and Administrators, as `install.ps1` sets on
//! the key file; a secret file whose DACL lets Everyone, Users,
//! Authenticated Users, Guests or anonymous logons read it (or that has no
//! DACL at all) is refused. The DACL is read as SDDL, and the rule that
//! judges it ([`broad_readers`]) is plain text logic, tested everywhere.
//! Wine 8 keeps no DACLs (it maps one onto Unix mode bits and leaves
//! Everyone's read in place), so under Wine a file can be seen refused as
//! open to Everyone, but not seen made owner-only.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Create `path` (which must not exist) for reading and writing, readable
/// by its owner only. On Unix the mode is set as the file is made. On
/// Windows the DACL is set just after; a volume that keeps no ACLs (FAT,
/// exFAT) or refuses the change leaves the file as its folder makes it,
/// with a warning rather than no journal at all.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path)?;
    #[cfg(windows)]
    if let Err(e) = restrict(path) {
        tracing::warn!(path = %path.display(), "cannot make the file owner-only ({e}); it keeps its folder's ACL");
    }
    Ok(file)
}

/// Make an existing `path` readable by its owner only (Unix: mode 0600;
/// Windows: the protected owner/SYSTEM/Administrators DACL).
pub fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(windows)]
    {
        windows::restrict(path)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        Ok(())
    }
}

/// Who besides the owner can read `path`, in words for an error message
/// (`None`: no one). Unix: the group/other mode bits; Windows: the broad
/// groups [`broad_readers`] finds in its DACL.
pub fn others_can_read(path: &Path) -> std::io::Result<Option<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then(|| format!("group or others (mode {mode:o})")))
    }
    #[cfg(windows)]
    {
        let sddl = windows::dacl_sddl(path)?;
        let broad = broad_readers(&sddl);
        Ok((!broad.is_empty()).then(|| broad.join(", ")))
    }
    #[cfg(not(any(unix, windows)))]
    {
        std::fs::metadata(path)?;
        Ok(None)
    }
}

/// The command that makes `path` owner-only, for error messages.
pub fn fix_hint(path: &Path) -> String {
    if cfg!(windows) {
        format!("icacls \"{}\" /inheritance:r /grant:r \"%USERNAME%:F\" SYSTEM:F Administrators:F", path.display())
    } else {
        format!("chmod 600 {}", path.display())
    }
}

/// Well-known SIDs (SDDL aliases and string SIDs) that stand for people
/// other than the file's owner and its administrators.
const BROAD: [(&str, &str, &str); 6] = [
    ("WD", "S-1-1-0", "Everyone"),
    ("AU", "S-1-5-11", "Authenticated Users"),
    ("BU", "S-1-5-32-545", "Users"),
    ("BG", "S-1-5-32-546", "Guests"),
    ("AN", "S-1-5-7", "Anonymous Logon"),
    ("IU", "S-1-5-4", "Interactive Users"),
];

/// The broad groups that an SDDL DACL (`D:…` as
/// `ConvertSecurityDescriptorToStringSecurityDescriptorW` writes it) lets
/// read: allow ACEs (`A`) for them whose rights include reading data
/// (`FA`, `FR`, `GA`, `GR`, `GX`'s neighbour `0x…` masks with bit 0 or
/// GENERIC_READ/ALL set). Inherit-only ACEs (`IO`) do not apply to the file
/// itself. A DACL that is absent (`D:NO_ACCESS_CONTROL`, or no `D:` part)
/// lets everyone read.
pub fn broad_readers(sddl: &str) -> Vec<&'static str> {
    let Some(start) = sddl.find("D:") else { return vec!["Everyone (no DACL)"] };
    let dacl = &sddl[start + 2..];
    // The DACL ends where a SACL (`S:`) begins.
    let dacl = dacl.find("S:(").map_or(dacl, |end| &dacl[..end]);
    if dacl.starts_with("NO_ACCESS_CONTROL") {
        return vec!["Everyone (no DACL)"];
    }
    let mut found = Vec::new();
    for ace in dacl.split('(').skip(1) {
        let ace = ace.trim_end_matches(')');
        let fields: Vec<&str> = ace.split(';').collect();
        let [kind, flags, rights, _, _, sid, ..] = fields.as_slice() else { continue };
        if *kind != "A" || flags.contains("IO") || !grants_read(rights) {
            continue;
        }
        if let Some((_, _, name)) = BROAD.iter().find(|(alias, string, _)| sid == alias || sid == string)
            && !found.contains(name)
        {
            found.push(*name);
        }
    }
    found
}

/// Does an SDDL rights string include reading the file's data?
fn grants_read(rights: &str) -> bool {
    const FILE_READ_DATA: u32 = 0x1;
    const GENERIC_ALL: u32 = 0x1000_0000;
    const GENERIC_READ: u32 = 0x8000_0000;
    if let Some(hex) = rights.strip_prefix("0x").or_else(|| rights.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).is_ok_and(|m| m & (FILE_READ_DATA | GENERIC_ALL | GENERIC_READ) != 0);
    }
    // Two-letter codes: FA file all, FR file read, GA generic all, GR generic
    // read, RC/WD/… never grant data; `CC` is FILE_READ_DATA's directory alias.
    rights.as_bytes().chunks(2).any(|c| matches!(c, b"FA" | b"FR" | b"GA" | b"GR" | b"CC"))
}

#[cfg(windows)]
mod windows {
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::{CloseHandle, ERROR_SUCCESS, HANDLE, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
        ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
        SetNamedSecurityInfoW,
    };
    use windows_sys::Win32::Security::{
        ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, GetTokenInformation,
        PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, TOKEN_QUERY, TOKEN_USER, TokenUser,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
        s.encode_wide().chain(std::iter::once(0)).collect()
    }

    /// A NUL-terminated UTF-16 string the system allocated, freed with LocalFree.
    fn take_local_string(p: *mut u16) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: `p` is a NUL-terminated string LocalAlloc'd by the system
        // call that returned it; it is read up to its NUL, then freed once.
        unsafe {
            let len = (0..).take_while(|&i| *p.add(i) != 0).count();
            let s = String::from_utf16_lossy(std::slice::from_raw_parts(p, len));
            LocalFree(p.cast());
            s
        }
    }

    /// This process's user as a string SID (`S-1-5-21-…`).
    fn current_user_sid() -> std::io::Result<String> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: the pseudo-handle needs no closing; `token` is written on success.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u64; 64]; // 512 bytes, 8-aligned: TOKEN_USER and its SID
        let mut len = 0u32;
        // SAFETY: the buffer and its size are ours; the token is open.
        let ok =
            unsafe { GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), (buf.len() * 8) as u32, &mut len) };
        let err = std::io::Error::last_os_error();
        // SAFETY: the token was opened above and is closed once.
        unsafe { CloseHandle(token) };
        if ok == 0 {
            return Err(err);
        }
        // SAFETY: on success the buffer starts with a TOKEN_USER whose SID
        // points into the same buffer, which outlives this use.
        let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
        let mut s: *mut u16 = std::ptr::null_mut();
        // SAFETY: `sid` is valid (above); `s` is LocalAlloc'd on success.
        if unsafe { ConvertSidToStringSidW(sid, &mut s) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(take_local_string(s))
    }

    /// Replace `path`'s DACL with a protected one: full access for this
    /// process's user, SYSTEM and Administrators, nothing inherited.
    pub(super) fn restrict(path: &Path) -> std::io::Result<()> {
        set_dacl(path, &format!("D:P(A;;FA;;;{})(A;;FA;;;SY)(A;;FA;;;BA)", current_user_sid()?))
    }

    /// Replace `path`'s DACL with the one `sddl` (`D:…`) describes.
    pub(super) fn set_dacl(path: &Path, sddl: &str) -> std::io::Result<()> {
        let sddl = wide(sddl.as_ref());
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated; `sd` is LocalAlloc'd on success.
        if unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        } == 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: `sd` is a valid descriptor; the DACL pointer points into it.
        let ok = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
        let name = wide(path.as_os_str());
        let rc = if ok == 0 {
            None
        } else {
            // SAFETY: `name` is NUL-terminated, `dacl` lives inside `sd`, which is freed after.
            Some(unsafe {
                SetNamedSecurityInfoW(
                    name.as_ptr(),
                    SE_FILE_OBJECT,
                    DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    dacl,
                    std::ptr::null(),
                )
            })
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: `sd` was LocalAlloc'd by the conversion above and is freed once.
        unsafe { LocalFree(sd) };
        match rc {
            None => Err(err),
            Some(ERROR_SUCCESS) => Ok(()),
            Some(code) => Err(std::io::Error::from_raw_os_error(code as i32)),
        }
    }

    /// `path`'s DACL as SDDL (`D:…`).
    pub(super) fn dacl_sddl(path: &Path) -> std::io::Result<String> {
        let name = wide(path.as_os_str());
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `sd` is LocalAlloc'd on success.
        let rc = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut sd,
            )
        };
        if rc != ERROR_SUCCESS {
            return Err(std::io::Error::from_raw_os_error(rc as i32));
        }
        let mut s: *mut u16 = std::ptr::null_mut();
        // SAFETY: `sd` is valid; `s` is LocalAlloc'd on success.
        let ok = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                sd,
                SDDL_REVISION_1,
                DACL_SECURITY_INFORMATION,
                &mut s,
                std::ptr::null_mut(),
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: `sd` was LocalAlloc'd by GetNamedSecurityInfoW and is freed once.
        unsafe { LocalFree(sd) };
        if ok == 0 {
            return Err(err);
        }
        Ok(take_local_string(s))
    }
}

/// Test support: let everyone read `path` (Unix: mode 0644; Windows: an
/// Everyone read ACE, nothing else).
#[cfg(test)]
pub(crate) fn open_to_everyone(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(windows)]
    {
        windows::set_dacl(path, "D:P(A;;FA;;;WD)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broad_readers_reads_the_dacl_as_windows_writes_it() {
        // install.ps1's key file: SYSTEM and the service account read, Administrators full.
        let key = "D:PAI(A;;FR;;;SY)(A;;FR;;;S-1-5-21-1-2-3-1001)(A;;FA;;;BA)";
        assert!(broad_readers(key).is_empty());
        // A file in %ProgramData% with inherited ACEs: Users may read.
        let inherited = "D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;0x1200a9;;;BU)(A;CIIOID;GA;;;CO)";
        assert_eq!(broad_readers(inherited), ["Users"]);
        assert_eq!(broad_readers("D:(A;;GR;;;WD)(A;;FR;;;S-1-5-11)"), ["Everyone", "Authenticated Users"]);
        // Inherit-only and deny ACEs, and rights without data, do not count.
        assert!(broad_readers("D:(A;OICIIO;GA;;;BU)(D;;FA;;;WD)(A;;0x100080;;;WD)").is_empty());
        // No DACL at all: everyone.
        assert_eq!(broad_readers("D:NO_ACCESS_CONTROL"), ["Everyone (no DACL)"]);
        assert_eq!(broad_readers("O:BA"), ["Everyone (no DACL)"]);
        // The SACL after the DACL is not read as part of it.
        assert!(broad_readers("D:P(A;;FA;;;SY)S:(AU;SA;FR;;;WD)").is_empty());
    }

    #[test]
    fn a_file_made_owner_only_is_not_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        drop(create_new(&path).expect("create"));
        #[cfg(unix)]
        assert_eq!(others_can_read(&path).expect("read permissions"), None);
        assert!(create_new(&path).is_err(), "never opens an existing file");
        open_to_everyone(&path).expect("open up");
        let who = others_can_read(&path).expect("read permissions");
        let want = if cfg!(windows) { "Everyone" } else { "group or others (mode 644)" };
        assert_eq!(who.as_deref(), Some(want));
        #[cfg(unix)]
        {
            // Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
            // bits and leaves Everyone's read), so owner-only is observed on Unix only.
            restrict(&path).expect("restrict");
            assert_eq!(others_can_read(&path).expect("read permissions"), None);
        }
    }
}
