//! An S3-compatible server for the off-site figures: `moto_server` from
//! `.ci/venv` (installed by `.ci/run`) or `DOCKET_TEST_MOTO_SERVER`, started on
//! a loopback port with one bucket; `None` (figures skipped) when missing.
use docket::lifecycle::offsite::{Settings, Target};
use docket::secrets::Secret;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub settings: Settings,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/moto_server");
    std::env::var_os("DOCKET_TEST_MOTO_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or(venv.exists().then_some(venv))
}

impl Moto {
    /// moto on a free loopback port with the bucket `bench`.
    pub fn start() -> Option<Moto> {
        let binary = binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let script = format!(
            "import boto3; boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='bench', aws_secret_access_key='bench', region_name='us-east-1').create_bucket(Bucket='bench')"
        );
        let made = Command::new(binary.with_file_name("python")).args(["-c", &script]).status().ok()?;
        made.success().then_some(())?;
        let settings = Settings {
            url: "s3://bench/appliance".into(),
            bucket: "bench".into(),
            prefix: "appliance".into(),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            access_key_id: "bench".into(),
            secret_access_key: Secret::new("bench"),
            allow_http: true,
        };
        Some(Moto { child, settings })
    }

    pub fn target(&self) -> Target {
        Target::new(&self.settings).expect("target")
    }
}
