//! The real S3 server the upload tests talk to: a Garage started by `scripts/garage.sh`
//! (`.ci/run` and `scripts/test.sh` start the shared one), or a private one a test starts,
//! kills and restarts itself.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Garage {
    /// The NAME=value lines `scripts/garage.sh start` wrote.
    pub vars: HashMap<String, String>,
    pub dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    pub client: aws_sdk_s3::Client,
    /// Stop the server when dropped (private servers only).
    owned: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage.sh")
}

fn read_env_file(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. The upload tests need a Garage S3 server: run scripts/garage.sh start \
             (scripts/test.sh and .ci/run do this)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Garage {
    /// The shared server: `$FLOWCAM_TEST_GARAGE/env`, else `target/garage/env`.
    pub fn shared() -> Garage {
        let dir = std::env::var_os("FLOWCAM_TEST_GARAGE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/garage"));
        Garage::from_dir(dir, false)
    }

    /// A server of the test's own, with its data in `dir`, on free ports.
    pub fn private(dir: &Path) -> Garage {
        let s3 = free_port();
        let rpc = free_port();
        let status = Command::new("bash")
            .arg(script())
            .args(["start", dir.to_str().unwrap()])
            .env("GARAGE_S3_PORT", s3.to_string())
            .env("GARAGE_RPC_PORT", rpc.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "scripts/garage.sh start {}",
            dir.display()
        );
        Garage::from_dir(dir.to_path_buf(), true)
    }

    fn from_dir(dir: PathBuf, owned: bool) -> Garage {
        let vars = read_env_file(&dir.join("env"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let credentials = Credentials::new(
            &vars["AWS_ACCESS_KEY_ID"],
            &vars["AWS_SECRET_ACCESS_KEY"],
            None,
            None,
            "test",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(credentials)
            .region(Region::new(vars["AWS_REGION"].clone()))
            .endpoint_url(&vars["AWS_ENDPOINT_URL"])
            .force_path_style(true)
            .build();
        Garage {
            vars,
            dir,
            runtime,
            client: aws_sdk_s3::Client::from_conf(config),
            owned,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.vars["FLOWCAM_TEST_BUCKET"]
    }

    pub fn endpoint(&self) -> &str {
        &self.vars["AWS_ENDPOINT_URL"]
    }

    pub fn secret(&self) -> &str {
        &self.vars["AWS_SECRET_ACCESS_KEY"]
    }

    /// The variables the pipeline needs, as a `.env` file would give them.
    pub fn dotenv(&self) -> String {
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
        ]
        .iter()
        .map(|k| format!("{k}={}\n", self.vars[*k]))
        .collect()
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        // Wait until the port is closed.
        for _ in 0..100 {
            if std::net::TcpStream::connect(self.endpoint().trim_start_matches("http://")).is_err()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("garage still answers after kill -9");
    }

    pub fn restart(&self) {
        let status = Command::new("bash")
            .arg(script())
            .args(["restart", self.dir.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/garage.sh restart");
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Every key under `prefix` with its size and ETag (unquoted).
    pub fn list(&self, bucket: &str, prefix: &str) -> HashMap<String, (u64, String)> {
        self.block_on(async {
            let mut found = HashMap::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    found.insert(
                        object.key().unwrap().to_string(),
                        (
                            object.size().unwrap() as u64,
                            object.e_tag().unwrap().trim_matches('"').to_string(),
                        ),
                    );
                }
            }
            found
        })
    }

    /// (content type, user metadata) of one object.
    pub fn head(&self, bucket: &str, key: &str) -> (String, HashMap<String, String>) {
        self.block_on(async {
            let head = self
                .client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
            (
                head.content_type().unwrap_or_default().to_string(),
                head.metadata().cloned().unwrap_or_default(),
            )
        })
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.block_on(async {
            let object = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
            object.body.collect().await.unwrap().to_vec()
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.block_on(async {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        });
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", self.dir.to_str().unwrap()])
                .status();
        }
    }
}
