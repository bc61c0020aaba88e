//! `completions`, `manpage` and `forget` through the real binary.

use spatialgen_sync::group::Violation;
use spatialgen_sync::journal::Enqueued;
use spatialgen_sync::journal::prelude::*;

use crate::support::*;

#[tokio::test]
async fn completions_name_every_command_for_each_shell() {
    let w = World::new(1024, "").await;
    for shell in ["bash", "zsh", "fish"] {
        let r = w.run(KEY, &["completions", shell]).await;
        assert_eq!(r.code, Some(0), "{shell}: {}", r.stderr);
        for cmd in ["run", "check", "plan", "upload", "status", "show", "cancel", "retry", "forget", "manpage"] {
            assert!(r.stdout.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let bash = w.run(KEY, &["completions", "bash"]).await.stdout;
    assert!(
        bash.contains("complete -F _spatialgen__sync") && bash.contains(" spatialgen-sync\n"),
        "registered for the binary"
    );
    let bad = w.run(KEY, &["completions", "tcsh"]).await;
    assert_eq!(bad.code, Some(2), "an unknown shell is a usage error");
}

#[tokio::test]
async fn manpage_is_roff_with_the_commands() {
    let w = World::new(1024, "").await;
    let r = w.run(KEY, &["manpage"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with(".ie") || r.stdout.contains(".TH spatialgen-sync 1"), "{}", &r.stdout[..200]);
    assert!(r.stdout.contains(".TH spatialgen-sync 1"));
    for cmd in ["forget", "completions", "status"] {
        assert!(r.stdout.contains(cmd), "the man page lacks {cmd}");
    }
}

#[tokio::test]
async fn forget_drops_old_ended_groups_but_keeps_an_export_still_in_place_and_live_groups() {
    let w = World::new(1024, "").await;
    let journal = w.journal();
    let reject = |name: &str| {
        let folder = w.export(name, &[("v.mov", 2000)]);
        let mut g = w.group(&folder, "2D", "Regular");
        g.violations.push(Violation { rule: "test", file: None, message: "for forget".into() });
        let Enqueued::Rejected(id) = journal.enqueue(&g).unwrap() else { panic!("not rejected") };
        journal.set_finished(id).unwrap();
        (folder, id)
    };
    let (gone, gone_id) = reject("gone");
    std::fs::remove_dir_all(&gone).unwrap();
    let (_still, still_id) = reject("still-here");
    let live = w.export("live", &[("v.mov", 2000)]);
    let live_id = w.enqueue(&journal, &w.group(&live, "2D", "Regular"));
    let config = w.config_path.to_str().unwrap().to_string();

    let none = w.run(KEY, &["forget", "--config", &config, "--older-than", "30d"]).await;
    assert_eq!(none.code, Some(0), "{}", none.stderr);
    assert!(none.stdout.contains("forgot 0 group(s)"), "{}", none.stdout);

    let r = w.run(KEY, &["forget", "--config", &config, "--older-than", "0s"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("forgot 1 group(s)"), "{}", r.stdout);
    assert!(r.stdout.contains("kept 1 ended group(s) whose export is still in place"), "{}", r.stdout);
    let ids: Vec<i64> = journal.list().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![still_id, live_id], "group {gone_id} is forgotten");

    let bad = w.run(KEY, &["forget", "--config", &config, "--older-than", "soon"]).await;
    assert_eq!(bad.code, Some(2), "a bad duration is a usage error: {}", bad.stderr);
}

#[cfg(unix)]
#[tokio::test]
async fn check_names_the_webhook_secret_file_never_the_secret_and_refuses_an_open_one() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(1024, "").await;
    let secret = w.dir.path().join("webhook-secret");
    std::fs::write(&secret, "n0t-for-your-eyes\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hooks =
        format!("[hooks]\nwebhook = \"https://hooks.example.com/x\"\nwebhook_secret_file = \"{}\"\n", secret.display());
    w.write_config("", &hooks);
    let config = w.config_path.to_str().unwrap().to_string();
    let ok = w.run(KEY, &["check", "--config", &config]).await;
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert!(ok.stdout.contains(&format!("# webhook signing secret: read from {}", secret.display())), "{}", ok.stdout);
    assert!(!format!("{}{}", ok.stdout, ok.stderr).contains("n0t-for-your-eyes"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let open = w.run(KEY, &["check", "--config", &config]).await;
    assert_eq!(open.code, Some(2), "{}", open.stdout);
    assert!(
        open.stderr
            .contains(&format!("hooks.webhook_secret_file: {} is readable by group or others", secret.display())),
        "{}",
        open.stderr
    );
    assert!(open.stderr.contains(&format!("chmod 600 {}", secret.display())), "{}", open.stderr);

    // A secret with nothing to sign is a mistake in the file.
    w.write_config("", &format!("[hooks]\nwebhook_secret_file = \"{}\"\n", secret.display()));
    let lone = w.run(KEY, &["check", "--config", &config]).await;
    assert_eq!(lone.code, Some(2));
    assert!(
        lone.stderr.contains("hooks.webhook_secret_file: is set, but there is no hooks.webhook"),
        "{}",
        lone.stderr
    );
}
