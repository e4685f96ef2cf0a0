//! A throwaway certificate authority for tests that need real TLS: the HTTPS vendor stand-in
//! (`tests/vendor-standin/standin.py --tls-cert --tls-key`) and the egress proxy's unit-test
//! upstreams serve [`TestCa::cert_pem`], and the worker's egress proxy trusts [`TestCa::ca_pem`]
//! (`OUTPOST_EGRESS_CA`). Made with the `openssl` command line (no key material is checked in),
//! valid for one day.

use std::io::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The names and addresses the leaf certificate is valid for.
pub const LEAF_SAN: &str =
    "DNS:localhost,DNS:vendor.outpost.test,DNS:allowed.outpost.test,DNS:a.example,IP:127.0.0.1,IP:198.18.0.1,IP:198.18.0.7";

/// A self-signed CA and one server certificate it signed ([`LEAF_SAN`]), EC P-256 keys, in PEM
/// files under `dir` (removed when dropped).
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate: what a client trusts.
    pub ca_pem: PathBuf,
    /// The leaf certificate followed by the CA's (the chain a server presents).
    pub cert_pem: PathBuf,
    /// The leaf's private key (PKCS#8).
    pub key_pem: PathBuf,
}

/// The `openssl` program: `OUTPOST_OPENSSL` or `/usr/bin/openssl`, else the first on `PATH`.
fn openssl() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OUTPOST_OPENSSL") {
        return Ok(PathBuf::from(p));
    }
    let default = Path::new("/usr/bin/openssl");
    if default.exists() {
        return Ok(default.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("openssl"))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::other("the openssl command line is needed to make the tests' CA (apt-get install openssl)")
        })
}

fn run(dir: &Path, args: &[&str]) -> Result<()> {
    let program = openssl()?;
    let out = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::other(format!("cannot run {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(Error::other(format!(
            "openssl {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl TestCa {
    /// Makes the CA and the leaf (a few `openssl` calls, well under a second).
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(
            d.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
        )?;
        std::fs::write(
            d.join("leaf.ext"),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={LEAF_SAN}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            ),
        )?;
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        run(d, &[&["genpkey"][..], &ec, &["-out", "ca.key"]].concat())?;
        run(
            d,
            &[
                "req",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=Outpost test CA",
                "-out",
                "ca.csr",
            ],
        )?;
        run(
            d,
            &[
                "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "1", "-sha256", "-extfile", "ca.ext",
                "-out", "ca.pem",
            ],
        )?;
        run(d, &[&["genpkey"][..], &ec, &["-out", "leaf.key"]].concat())?;
        run(
            d,
            &[
                "req",
                "-new",
                "-key",
                "leaf.key",
                "-subj",
                "/CN=vendor.outpost.test",
                "-out",
                "leaf.csr",
            ],
        )?;
        run(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-sha256",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        )?;
        let chain = std::fs::read_to_string(d.join("leaf.pem"))? + &std::fs::read_to_string(d.join("ca.pem"))?;
        std::fs::write(d.join("chain.pem"), chain)?;
        // The stand-in may run as another user than the test; the key is a throwaway.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        for f in ["ca.pem", "chain.pem", "leaf.key"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(Self {
            ca_pem: d.join("ca.pem"),
            cert_pem: d.join("chain.pem"),
            key_pem: d.join("leaf.key"),
            dir,
        })
    }
}
