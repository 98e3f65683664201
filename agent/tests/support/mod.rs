//! Fixtures for the workspace tests: bare "GitHub" repositories built with git2, and a
//! small smart-HTTP server (`git http-backend` behind HTTP Basic auth) so clones and pushes
//! go through libgit2's real HTTP transport and credentials callback.

#![allow(dead_code)] // Each test uses some of the fixtures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use git2::{Oid, Repository, Signature};

/// A bare repository under a temp dir, with `main` holding `files`.
pub struct Upstream {
    pub root: tempfile::TempDir,
    pub bare: PathBuf,
}

impl Upstream {
    /// `acme/api.git` with one commit on `main`.
    pub fn with_files(files: &[(&str, &str)]) -> Upstream {
        let root = tempfile::tempdir().expect("a temp dir");
        let bare = root.path().join("acme").join("api.git");
        let repo = Repository::init_bare(&bare).expect("init a bare repository");
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect();
        let tree_id = write_tree(&repo, &files);
        let tree = repo.find_tree(tree_id).expect("the tree");
        let author = Signature::now("Alice", "alice@example.com").expect("a signature");
        repo.commit(
            Some("refs/heads/main"),
            &author,
            &author,
            "Initial commit\n",
            &tree,
            &[],
        )
        .expect("the initial commit");
        repo.set_head("refs/heads/main").expect("HEAD is main");
        Upstream { root, bare }
    }

    /// The `file://` URL of the bare repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// The bare repository.
    pub fn repo(&self) -> Repository {
        Repository::open_bare(&self.bare).expect("open the bare repository")
    }

    /// The commit `refs/heads/<branch>` points to, if the branch exists.
    pub fn branch_tip(&self, branch: &str) -> Option<Oid> {
        self.repo()
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .and_then(|r| r.target())
    }

    /// Makes the server refuse every push with `message` (a pre-receive hook).
    pub fn refuse_pushes(&self, message: &str) {
        let hook = self.bare.join("hooks").join("pre-receive");
        std::fs::create_dir_all(hook.parent().expect("hooks dir")).expect("hooks dir");
        std::fs::write(&hook, format!("#!/bin/sh\necho '{message}' >&2\nexit 1\n"))
            .expect("write the hook");
        let mut permissions = std::fs::metadata(&hook).expect("hook").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&hook, permissions).expect("make the hook executable");
    }
}

/// Writes a tree of `files` (paths with `/`) into `repo`.
fn write_tree(repo: &Repository, files: &[(String, String)]) -> Oid {
    let mut builder = repo.treebuilder(None).expect("a tree builder");
    let mut dirs: Vec<&str> = Vec::new();
    for (path, content) in files {
        match path.split_once('/') {
            None => {
                let blob = repo.blob(content.as_bytes()).expect("a blob");
                builder.insert(path, blob, 0o100644).expect("insert a blob");
            }
            Some((dir, _)) if !dirs.contains(&dir) => dirs.push(dir),
            Some(_) => {}
        }
    }
    for dir in dirs {
        let inner: Vec<(String, String)> = files
            .iter()
            .filter_map(|(path, content)| {
                path.strip_prefix(dir)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| (rest.to_owned(), content.clone()))
            })
            .collect();
        let tree = write_tree(repo, &inner);
        builder.insert(dir, tree, 0o040000).expect("insert a tree");
    }
    builder.write().expect("write the tree")
}

/// A git smart-HTTP server for the repositories under a directory, accepting only
/// `x-access-token:<token>` Basic credentials (GitHub's scheme for App tokens).
pub struct GitHttp {
    base: String,
    authenticated: Arc<AtomicUsize>,
}

impl GitHttp {
    /// Serves the repositories under `root` on a loopback port.
    pub fn start(root: &Path, token: &str) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let expected = format!("Basic {}", base64(&format!("x-access-token:{token}")));
        let authenticated = Arc::new(AtomicUsize::new(0));
        let root = root.to_owned();
        let counter = Arc::clone(&authenticated);
        // The accept loop lives as long as the test process; every test has its own port.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, expected, counter) = (root.clone(), expected.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &expected, &counter);
                });
            }
        });
        GitHttp {
            base,
            authenticated,
        }
    }

    /// The clone URL of `owner/name`.
    pub fn url(&self, repository: &str) -> String {
        format!("{}/{repository}.git", self.base)
    }

    /// Requests that carried credentials (right or wrong).
    pub fn authenticated_requests(&self) -> usize {
        self.authenticated.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    expected_auth: &str,
    authenticated: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    let mut stream = stream;
    let auth = request.header("Authorization");
    if auth.is_some() {
        authenticated.fetch_add(1, Ordering::SeqCst);
    }
    if auth != Some(expected_auth) {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_TYPE", request.header("Content-Type").unwrap_or(""))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = request.body;
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut output)?;
    child.wait()?;
    let _ = writer.join();

    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, at + 2))
        })
        .unwrap_or((0, 0));
    let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in head.lines().filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("Status") => {
                status = value.trim().to_owned();
            }
            _ => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
        }
    }
    let body = &output[split.1..];
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.header("Content-Length") {
        let mut body = vec![0; length.parse().unwrap_or(0)];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
