//! The `herald` binary as an operator uses it.

use std::process::{Command, Stdio};
use std::time::Duration;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

#[test]
fn version_and_help_document_every_option() {
    let out = herald().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = herald().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--listen",
        "--database",
        "--allow-private-network",
        "--callback-timeout",
        "--retry-schedule",
        "--no-migrate",
        "HERALD_DATABASE_URL",
        "[default: 256]",
        "[default: 127.0.0.1:8080]",
    ] {
        assert!(
            help.contains(option),
            "serve --help lacks {option}:\n{help}"
        );
    }
}

#[test]
fn users_add_prints_a_token_that_works_and_bad_roles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let out = herald()
        .args([
            "users",
            "add",
            "--email",
            "a@example.com",
            "--role",
            "developer",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no workspace yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("herald serve"));

    // `migrate` alone does not create the workspace; a first `serve` does.
    let out = herald()
        .args(["migrate", "--database", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut child, addr) = serve(&db, &[]);
    let out = herald()
        .args([
            "users",
            "add",
            "--email",
            "a@example.com",
            "--role",
            "developer",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("API token: "))
        .unwrap()
        .to_owned();
    assert!(token.starts_with("hrld_"));
    let status = reqwest::blocking_get_status(&format!("http://{addr}/api/v1/webhooks"), &token);
    assert_eq!(status, 200);

    let out = herald()
        .args([
            "users",
            "add",
            "--email",
            "b@example.com",
            "--role",
            "boss",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("boss"));
    terminate(&mut child);
}

#[test]
fn sigterm_stops_serve_cleanly_and_first_start_prints_credentials_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let (mut child, _) = serve(&db, &[]);
    let code = terminate(&mut child);
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    let first = read_stdout(&mut child);
    assert!(
        first.contains("password:") && first.contains("API token: hrld_"),
        "{first}"
    );

    let (mut child, _) = serve(&db, &[]);
    terminate(&mut child);
    let second = read_stdout(&mut child);
    assert!(
        !second.contains("password:"),
        "credentials are printed only on the first start: {second}"
    );
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herald.toml"), "callback_timeout = 0\n").unwrap();
    let out = herald()
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("callback timeout"));
    let clean = tempfile::tempdir().unwrap();
    let out = herald()
        .current_dir(clean.path())
        .args(["serve", "--retry-schedule", "5s,soon"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("entry 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `herald config example` prints every key at its default; the file it prints passes
/// `herald config check`, which also names what is wrong in a file or a variable.
#[test]
fn config_example_is_a_valid_file_and_config_check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald().args(["config", "example"]).output().unwrap();
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    for key in [
        "listen = \"127.0.0.1:8080\"",
        "max_per_host = 256",
        "backpressure_lag = \"1s\"",
        "trusted_proxies = []",
    ] {
        assert!(example.contains(key), "{key} in\n{example}");
    }
    std::fs::write(dir.path().join("herald.toml"), &example).unwrap();
    let check = |env: &[(&str, &str)], file: &str| {
        std::fs::write(dir.path().join("herald.toml"), file).unwrap();
        let mut cmd = herald();
        cmd.current_dir(dir.path()).args(["config", "check"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check(&[], &example);
    assert!(ok && text.contains("the configuration is valid"), "{text}");
    assert!(text.contains("max_per_host: 256"), "{text}");
    // A variable wins over the file, and is checked like it.
    let (ok, text) = check(&[("HERALD_MAX_PER_HOST", "32")], &example);
    assert!(ok && text.contains("max_per_host: 32"), "{text}");
    let (ok, text) = check(&[("HERALD_MAX_PER_HOST", "0")], &example);
    assert!(!ok && text.contains("max per host"), "{text}");
    // A typo or a wrong type in the file is named with the file.
    let (ok, text) = check(&[], "max_per_hots = 3\n");
    assert!(
        !ok && text.contains("max_per_hots") && text.contains("herald.toml"),
        "{text}"
    );
    let (ok, text) = check(&[], "max_per_host = \"many\"\n");
    assert!(!ok && text.contains("max_per_host"), "{text}");
    // Nothing was started: no database file appeared.
    assert!(!dir.path().join("herald.db").exists());
}

/// Starts `herald serve` on a free port and waits until it listens.
fn serve(db: &str, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", db])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        let mut sent = false;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            all.push_str(&line);
            all.push('\n');
            if let Some(addr) = line.strip_prefix("Herald is listening on http://")
                && !sent
            {
                tx.send(Ok(addr.to_owned())).unwrap();
                sent = true;
            }
        }
        let _ = tx.send(Err(all));
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve starts")
        .expect("serve prints its address");
    STDOUT.with(|s| s.borrow_mut().push(rx));
    (child, addr)
}

thread_local! {
    static STDOUT: std::cell::RefCell<Vec<std::sync::mpsc::Receiver<Result<String, String>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Everything the last started child printed, once it has exited.
fn read_stdout(_child: &mut std::process::Child) -> String {
    STDOUT.with(|s| {
        let rx = s.borrow_mut().remove(0);
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Err(all)) => all,
            other => panic!("no output: {other:?}"),
        }
    })
}

fn terminate(child: &mut std::process::Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("herald did not stop within 10 s of SIGTERM");
}

mod reqwest {
    /// A tiny blocking GET for the synchronous CLI tests.
    pub fn blocking_get_status(url: &str, token: &str) -> u16 {
        herald::startup::install_tls_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ::reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }
}

/// A first start that cannot take its port stops before creating the first administrator, so
/// the start that does serve is the one that shows the credentials.
#[tokio::test]
async fn a_first_start_that_cannot_listen_creates_no_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = herald::Config::with_database(url.clone());
    config.listen = taken.local_addr().unwrap();
    let error = herald::start(config)
        .await
        .err()
        .expect("the port is taken");
    assert!(format!("{error:#}").contains("listening on"), "{error:#}");
    drop(taken);
    let mut config = herald::Config::with_database(url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let running = herald::start(config).await.unwrap();
    let shown = running
        .bootstrapped
        .as_ref()
        .expect("the start that creates the administrator shows the credentials");
    assert_eq!(shown.email, "admin@herald.local");
    running.shutdown();
    running.wait().await.unwrap();
}

/// `HERALD_ADMIN_TOKEN` counts only on the first start; on a later one Herald says it was
/// ignored instead of leaving the operator to wonder why the token does not work.
#[test]
fn an_admin_token_on_a_later_start_is_reported_as_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let (mut child, _) = serve(&db, &[]);
    terminate(&mut child);
    read_stdout(&mut child);
    let log = dir.path().join("stderr.log");
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .env("HERALD_ADMIN_TOKEN", "a-token-set-too-late-0123456789")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        // Read until it serves, and keep its stdout open until it has stopped.
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.starts_with("Herald is listening on"));
        assert!(listening, "the second start serves");
        terminate(&mut child);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("HERALD_ADMIN_TOKEN is set") && text.contains("ignored"),
        "{text}"
    );
    assert!(
        !text.contains("a-token-set-too-late"),
        "the token itself is never logged: {text}"
    );
}

/// As `herald serve 2>&1 | head -2`: once the reader is gone every log line fails to be
/// written, and Herald must go on answering and stop on SIGTERM (issue 19, item 18).
#[test]
fn a_closed_log_pipe_stops_neither_requests_nor_shutdown() {
    const TOKEN: &str = "closed-pipe-admin-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .env("RUST_LOG", "debug")
        .env("HERALD_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    // Both pipes are closed once the address is read.
    let (addr, _) = listening_address(child.stdout.take().unwrap());
    herald::startup::install_tls_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = rt.block_on(async {
        let http = ::reqwest::Client::new();
        let settings = serde_json::json!({
            "created": {"enabled": true, "urls": ["https://example.com/hook"]},
            "updated": {"enabled": false, "urls": []},
            "deleted": {"enabled": false, "urls": []},
        });
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let put = http
                .put(format!("http://{addr}/api/v1/webhooks"))
                .bearer_auth(TOKEN)
                .json(&settings)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("the settings request is answered");
            statuses.push(put.status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [200, 200, 200]);
    assert_eq!(terminate(&mut child), Some(0), "SIGTERM still stops Herald");
}

#[test]
fn serve_listens_on_localhost_port_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let mut child = herald()
        .args(["serve", "--listen", "localhost:0", "--database", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, _) = listening_address(child.stdout.take().unwrap());
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(terminate(&mut child), Some(0));
}

/// Log lines for collectors: `--log-format json` writes one JSON object per line, each with a
/// message; text written to a pipe has no colour codes; no secret appears in either.
#[test]
fn logs_are_json_lines_or_plain_text_and_never_hold_a_secret() {
    const TOKEN: &str = "log-format-admin-token-0123456789";
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("h.db").display());
        let mut child = herald()
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
            .args(["--log-format", format])
            .env("HERALD_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "herald=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addr, rest) = listening_address(child.stdout.take().unwrap());
        std::thread::spawn(move || rest.for_each(drop));
        let status = reqwest::blocking_get_status(&format!("http://{addr}/api/v1/users"), TOKEN);
        assert_eq!(status, 200);
        assert_eq!(terminate(&mut child), Some(0));
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!stderr.contains(TOKEN), "a secret in the log:\n{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes in a pipe:\n{stderr}"
        );
        assert!(stderr.contains("configuration file"), "{stderr}");
        if format == "json" {
            for line in stderr.lines() {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(value["fields"]["message"].is_string(), "{line}");
                assert!(
                    value["level"].is_string() && value["timestamp"].is_string(),
                    "{line}"
                );
            }
        }
    }
}

#[test]
fn migrate_says_what_it_applied_and_an_unreachable_server_says_why_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let run = |url: &str| {
        let out = herald()
            .current_dir(dir.path())
            .args(["migrate", "--database", url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, first, _) = run(&db);
    assert!(ok);
    let latest = crate::migrations::LATEST;
    assert!(
        first.starts_with(&format!("applied {latest} migrations to sqlite://"))
            && first.contains(&format!("now at version {latest}")),
        "{first}"
    );
    let (ok, again, _) = run(&db);
    assert!(ok);
    assert!(
        again.contains(&format!("is already at version {latest}")),
        "{again}"
    );

    // A port nothing listens on: refused, said as such (not "pool timed out").
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, _, err) = run(&format!("postgres://postgres@127.0.0.1:{port}/herald"));
    assert!(!ok);
    assert!(
        err.contains(&format!("connection refused at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("timed out"), "{err}");
    // A server that refuses the login: its reason, once.
    if !crate::db::postgres_skipped() {
        let admin = crate::db::postgres_admin_url();
        let url = admin.replacen("postgres://postgres@", "postgres://no_such_role@", 1);
        let (ok, _, err) = run(&url);
        assert!(!ok);
        assert_eq!(
            err.matches("role \"no_such_role\" does not exist").count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn the_user_lifecycle_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let (mut child, _) = serve(&db, &[]);
    terminate(&mut child);
    let users = |args: &[&str]| {
        let out = herald()
            .current_dir(dir.path())
            .arg("users")
            .args(args)
            .args(["--database", &db])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = users(&["add", "--email", "dev@example.com", "--role", "developer"]);
    assert!(ok, "{err}");
    let (ok, out, _) = users(&["set-role", "--email", "dev@example.com", "--role", "user"]);
    assert!(ok && out.contains("dev@example.com is now user"), "{out}");
    let (ok, out, _) = users(&["deactivate", "--email", "dev@example.com"]);
    assert!(ok && out.contains("is deactivated"), "{out}");
    let (ok, list, _) = users(&["list"]);
    assert!(ok);
    assert!(
        list.contains("dev@example.com\tuser\tdeactivated"),
        "{list}"
    );
    assert!(
        list.contains("admin@herald.local\tadministrator\tactive"),
        "{list}"
    );
    let (ok, out, _) = users(&["reactivate", "--email", "dev@example.com"]);
    assert!(ok && out.contains("is active again"), "{out}");
    let (ok, out, _) = users(&["reset-password", "--email", "dev@example.com"]);
    assert!(ok, "{out}");
    let password = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .expect("the new password is printed")
        .trim();
    assert!(password.len() >= 10, "{out}");
    let (ok, _, err) = users(&["deactivate", "--email", "nobody@example.com"]);
    assert!(
        !ok && err.contains("no user with the email nobody@example.com"),
        "{err}"
    );
}

/// Reads a started `serve`'s standard output up to its address line: the address, and the
/// rest of the output (dropping it closes the pipe).
fn listening_address(
    stdout: std::process::ChildStdout,
) -> (
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("Herald is listening on http://")
                .map(str::to_owned)
        })
        .expect("serve prints its address");
    (addr, lines)
}

#[test]
fn api_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let (mut child, _) = serve(&db, &[]);
    terminate(&mut child);
    let tokens = |args: &[&str]| {
        let out = herald()
            .current_dir(dir.path())
            .arg("tokens")
            .args(args)
            .args(["--database", &db, "--email", "admin@herald.local"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokens(&[
        "create",
        "--name",
        "reports",
        "--scope",
        "read",
        "--expires-in-days",
        "7",
    ]);
    assert!(ok, "{err}");
    let secret = out
        .trim()
        .rsplit(' ')
        .next()
        .filter(|t| t.starts_with("hrld_"))
        .unwrap_or_else(|| panic!("the token is printed: {out}"))
        .to_owned();
    let (ok, list, _) = tokens(&["list"]);
    assert!(ok);
    let line = list
        .lines()
        .find(|l| l.contains("\treports\t"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains(&format!("\t{}\tread\t", &secret[..9])),
        "{line}"
    );
    assert!(!list.contains(&secret[9..]), "never the secret: {list}");
    assert!(
        line.contains("last used never") && !line.contains("expires never"),
        "{line}"
    );

    let (mut child, addr) = serve(&db, &[]);
    assert_eq!(
        reqwest::blocking_get_status(&format!("http://{addr}/api/v1/processes"), &secret),
        200
    );
    terminate(&mut child);

    let id = line.split('\t').next().unwrap();
    let (ok, out, _) = tokens(&["revoke", "--id", id]);
    assert!(ok && out.contains(&format!("token {id} revoked")), "{out}");
    let (ok, _, err) = tokens(&["revoke", "--id", id]);
    assert!(
        !ok && err.contains(&format!("holds no token {id}")),
        "{err}"
    );
    let (ok, _, err) = tokens(&["create", "--name", "x", "--scope", "root"]);
    assert!(!ok && err.contains("not a token scope"), "{err}");
}
