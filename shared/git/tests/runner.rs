//! The hardened runner against a real `git`: URLs never run programs, failures never hold a token.

use outpost_git::runner::{Git, Options};
use secrecy::SecretString;

#[tokio::test]
async fn an_ext_url_or_an_option_like_url_runs_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("pwned");
    for options in [Options::workspace(), Options::isolated()] {
        for url in [
            format!("ext::sh -c touch% {}", marker.display()),
            format!("--upload-pack=touch {}", marker.display()),
        ] {
            let err = Git::new(options)
                .clone_shallow(&url, None, &tmp.path().join("ws"))
                .await
                .expect_err("refused");
            assert_eq!(err.what(), "git clone");
            assert!(err.detailed().starts_with("git clone failed ("), "{}", err.detailed());
            assert!(!marker.exists(), "{url} ran a program");
        }
    }
}

#[tokio::test]
async fn a_failed_clone_names_the_step_and_holds_no_token_or_url_password() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = SecretString::from("ghp_s3cretvalue");
    // Nothing listens on port 1: git fails fast with its own message.
    let url = "http://user:pa55word@127.0.0.1:1/o/r.git";
    let err = Git::new(Options::workspace())
        .with_token(url, Some(&token))
        .clone_shallow(url, Some("main"), &tmp.path().join("ws"))
        .await
        .expect_err("unreachable");
    for text in [
        err.to_string(),
        err.detailed(),
        err.stderr().to_owned(),
        format!("{err:?}"),
    ] {
        assert!(
            !text.contains("ghp_s3cretvalue") && !text.contains("pa55word"),
            "{text}"
        );
    }
    assert!(err.to_string().starts_with("git clone failed ("), "{err}");
}

#[tokio::test]
async fn head_commit_is_none_for_an_empty_repository_and_a_missing_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = Git::in_dir(Options::isolated(), tmp.path());
    git.init("main").await.expect("init");
    assert_eq!(git.head_commit().await, None);
    assert_eq!(git.at(tmp.path().join("missing")).head_commit().await, None);
}
