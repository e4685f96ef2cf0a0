//! The fault layer (`outpost_testkit::aws_faults`) in front of moto, driven by the real AWS SDK:
//! faults as the SDK sees them (with and without its retries), lost answers whose effect
//! happened, served and rewritten answers, S3 form POSTs checked against their policy as S3
//! checks them, and anonymous S3 reads refused.
//!
//! Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `outpost_testkit::aws`). Every test makes its own layer
//! and its own names.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_ssm::error::SdkError;
use base64::Engine;
use outpost_aws::s3::post::{
    live_prefix, run_prefix, sdk_credentials, sign_post, PostArtifactStore, PostError, PresignedPost,
};
use outpost_aws::s3::{create_bucket, object_key, S3ArtifactStore};
use outpost_aws::AwsClients;
use outpost_core::ports::{ArtifactError, ArtifactStore, RunKey};
use outpost_core::{RunId, TenantId};
use outpost_testkit::aws::{emulator_endpoint, emulator_sdk_config};
use outpost_testkit::aws_faults::{Fault, FaultLayer, Reply, Rule};
use std::time::Duration;

async fn layer() -> FaultLayer {
    FaultLayer::start(&emulator_endpoint())
        .await
        .expect("start the fault layer")
}

fn unique(what: &str) -> String {
    format!("{what}{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// An SSM client through `layer` with `retry` (the SDK's retry policy).
async fn ssm(layer: &FaultLayer, retry: aws_sdk_ssm::config::retry::RetryConfig) -> aws_sdk_ssm::Client {
    let sdk = emulator_sdk_config(&layer.endpoint()).await;
    aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::config::Builder::from(&sdk).retry_config(retry).build())
}

fn no_retries() -> aws_sdk_ssm::config::retry::RetryConfig {
    aws_sdk_ssm::config::retry::RetryConfig::disabled()
}

async fn put(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) -> Result<(), String> {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.code().unwrap_or("(no code)").to_owned())
}

/// The stored value of parameter `name`, asked of moto directly (not through any layer).
async fn stored(name: &str) -> Option<String> {
    let sdk = emulator_sdk_config(&emulator_endpoint()).await;
    let direct = aws_sdk_ssm::Client::new(&sdk);
    match direct.get_parameter().name(name).send().await {
        Ok(out) => out.parameter().and_then(|p| p.value()).map(str::to_owned),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => None,
        Err(e) => panic!("GetParameter: {e:?}"),
    }
}

#[tokio::test]
async fn the_first_n_calls_fail_as_the_sdk_sees_them() {
    let layer = layer().await;
    let client = ssm(&layer, no_retries()).await;
    let name = format!("/{}/p", unique("first"));
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 2,
            fault: Fault::throttling(),
        },
    );

    assert_eq!(put(&client, &name, "v").await, Err("ThrottlingException".to_owned()));
    assert_eq!(put(&client, &name, "v").await, Err("ThrottlingException".to_owned()));
    // An error fault answers in the layer: moto never saw those calls.
    assert_eq!(stored(&name).await, None);
    assert_eq!(put(&client, &name, "v").await, Ok(()));
    assert_eq!(stored(&name).await.as_deref(), Some("v"));
    assert_eq!(layer.calls("ssm:PutParameter"), 3);
    // The other ops were untouched (and counted under their own names).
    assert_eq!(layer.calls("ssm:GetParameter"), 0);
}

#[tokio::test]
async fn the_sdks_standard_retries_ride_out_the_faults() {
    let layer = layer().await;
    let retry = aws_sdk_ssm::config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(10));
    let client = ssm(&layer, retry).await;
    let name = format!("/{}/p", unique("retried"));
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 2,
            fault: Fault::throttling(),
        },
    );
    assert_eq!(put(&client, &name, "v").await, Ok(()));
    assert_eq!(layer.calls("ssm:PutParameter"), 3);
    assert_eq!(stored(&name).await.as_deref(), Some("v"));

    // Three faults are one too many for three attempts.
    layer.clear("ssm:PutParameter");
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 3,
            fault: Fault::server_error(),
        },
    );
    assert_eq!(put(&client, &name, "w").await, Err("InternalServerError".to_owned()));
    assert_eq!(layer.calls("ssm:PutParameter"), 6);
    assert_eq!(stored(&name).await.as_deref(), Some("v"));
}

#[tokio::test]
async fn every_nth_call_fails() {
    let layer = layer().await;
    let client = ssm(&layer, no_retries()).await;
    let name = format!("/{}/p", unique("every"));
    layer.inject(
        "ssm:PutParameter",
        Rule::Every {
            nth: 2,
            fault: Fault::server_error(),
        },
    );
    let mut results = Vec::new();
    for i in 0..5 {
        results.push(put(&client, &name, &format!("v{i}")).await);
    }
    let fail = Err("InternalServerError".to_owned());
    assert_eq!(results, vec![Ok(()), fail.clone(), Ok(()), fail, Ok(())]);
    assert_eq!(stored(&name).await.as_deref(), Some("v4"));

    // Rules are asked in the order added, and the first that fires wins; each counts from when
    // it was added.
    layer.clear("ssm:PutParameter");
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 1,
            fault: Fault::throttling(),
        },
    );
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 2,
            fault: Fault::error(400, "ValidationException", "no"),
        },
    );
    assert_eq!(put(&client, &name, "x").await, Err("ThrottlingException".to_owned()));
    assert_eq!(put(&client, &name, "x").await, Err("ValidationException".to_owned()));
    assert_eq!(put(&client, &name, "x").await, Ok(()));
}

#[tokio::test]
async fn a_dropped_answer_is_a_dispatch_failure_after_the_effect() {
    let layer = layer().await;
    let client = ssm(&layer, no_retries()).await;
    let name = format!("/{}/p", unique("drop"));
    layer.inject(
        "ssm:PutParameter",
        Rule::First {
            n: 1,
            fault: Fault::Drop,
        },
    );
    let err = client
        .put_parameter()
        .name(&name)
        .value("landed")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect_err("no answer");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    // Moto stored it all the same: the caller cannot tell.
    assert_eq!(stored(&name).await.as_deref(), Some("landed"));
    assert_eq!(layer.calls("ssm:PutParameter"), 1);
    // The layer keeps serving afterwards.
    assert_eq!(put(&client, &name, "again").await, Ok(()));
    assert_eq!(stored(&name).await.as_deref(), Some("again"));
}

#[tokio::test]
async fn served_answers_stand_in_for_what_moto_lacks() {
    let layer = layer().await;
    let client = ssm(&layer, no_retries()).await;
    // What moto itself answers (5.2.5: a 500): the server below is what makes the call work.
    let unserved = client.describe_instance_information().send().await;
    assert!(unserved.is_err(), "{unserved:?}");

    layer.serve("ssm:DescribeInstanceInformation", |request| {
        // The handler sees the request's JSON: a filter on another instance is not ours.
        if request["Filters"][0]["Values"][0] == "i-other" {
            return Some(Reply::error(400, "InvalidInstanceId", "no such instance"));
        }
        Some(Reply::ok(serde_json::json!({
            "InstanceInformationList": [
                {"InstanceId": "i-0123456789abcdef0", "PingStatus": "Online", "PlatformType": "Linux"}
            ]
        })))
    });
    let out = client.describe_instance_information().send().await.expect("served");
    let list = out.instance_information_list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].instance_id(), Some("i-0123456789abcdef0"));
    assert_eq!(list[0].ping_status(), Some(&aws_sdk_ssm::types::PingStatus::Online));

    let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values("i-other")
        .build()
        .expect("filter");
    let err = client
        .describe_instance_information()
        .filters(filter)
        .send()
        .await
        .expect_err("served error");
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    assert_eq!(err.message(), Some("no such instance"));
    assert_eq!(layer.calls("ssm:DescribeInstanceInformation"), 3);

    // A handler answering None forwards the call as usual.
    let name = format!("/{}/p", unique("serve"));
    layer.serve("ssm:PutParameter", |_| None);
    assert_eq!(put(&client, &name, "forwarded").await, Ok(()));
    assert_eq!(stored(&name).await.as_deref(), Some("forwarded"));
}

#[tokio::test]
async fn rewriters_change_what_moto_answered() {
    let layer = layer().await;
    let client = ssm(&layer, no_retries()).await;
    let name = format!("/{}/p", unique("rewrite"));
    assert_eq!(put(&client, &name, "original").await, Ok(()));
    layer.rewrite("ssm:GetParameter", |request, mut answer| {
        let asked = request["Name"].as_str().unwrap_or("").to_owned();
        answer["Parameter"]["Value"] = serde_json::json!(format!("rewritten {}", asked.len()));
        answer
    });
    let got = client.get_parameter().name(&name).send().await.expect("get");
    let value = got.parameter().and_then(|p| p.value());
    assert_eq!(value, Some(format!("rewritten {}", name.len()).as_str()));
    // Only the answer changed: moto holds the original, and errors pass unchanged.
    assert_eq!(stored(&name).await.as_deref(), Some("original"));
    let missing = client.get_parameter().name(format!("{name}-missing")).send().await;
    assert!(
        missing
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|s| s.is_parameter_not_found()),
        "{missing:?}"
    );
    layer.clear("ssm:GetParameter");
    let got = client.get_parameter().name(&name).send().await.expect("get");
    assert_eq!(got.parameter().and_then(|p| p.value()), Some("original"));
}

// ---- S3 ----

struct S3Setup {
    layer: FaultLayer,
    clients: AwsClients,
    store: S3ArtifactStore,
}

/// A fresh bucket made through a fresh layer; the S3 store and clients talk through the layer.
async fn s3_setup() -> S3Setup {
    let layer = layer().await;
    let clients = AwsClients::new(&emulator_sdk_config(&layer.endpoint()).await, None);
    let bucket = unique("t").to_string() + "-faults";
    create_bucket(&clients.s3, &bucket).await.expect("create bucket");
    let store = S3ArtifactStore::new(clients.s3.clone(), bucket, Duration::from_secs(900));
    S3Setup { layer, clients, store }
}

fn run() -> RunKey {
    RunKey {
        tenant: "acme".parse::<TenantId>().expect("tenant"),
        run: RunId::generate(),
    }
}

impl S3Setup {
    /// Whether `key` exists in the bucket (asked through the layer with the SDK).
    async fn exists(&self, key: &str) -> bool {
        let res = self
            .clients
            .s3
            .get_object()
            .bucket(self.store.bucket())
            .key(key)
            .send()
            .await;
        match res {
            Ok(_) => true,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => false,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    async fn presign(&self, prefix: &str, max_bytes: u64) -> PresignedPost {
        let creds = sdk_credentials(&emulator_sdk_config(&self.layer.endpoint()).await)
            .await
            .expect("credentials");
        self.store
            .presign_post(&creds, prefix, Duration::from_secs(600), max_bytes)
            .await
            .expect("presign")
    }
}

/// POSTs a form of `fields`, then the file `file`, to `url`; the status and body.
async fn post_form(url: &str, fields: &[(String, String)], file: &[u8]) -> (u16, String) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.clone(), value.clone());
    }
    let part = reqwest::multipart::Part::bytes(file.to_vec()).file_name("upload");
    let res = reqwest::Client::new()
        .post(url)
        .multipart(form.part("file", part))
        .send()
        .await
        .expect("POST");
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

/// The form a `PostArtifactStore` sends: the post's fields, `key` and `Content-Type`.
fn form(post: &PresignedPost, key: &str) -> Vec<(String, String)> {
    let mut fields = post.fields.clone();
    fields.push(("key".into(), key.into()));
    fields.push(("Content-Type".into(), "text/plain".into()));
    fields
}

fn set(fields: &mut [(String, String)], name: &str, value: String) {
    for (k, v) in fields.iter_mut() {
        if k == name {
            *v = value.clone();
        }
    }
}

/// A form POST the policy check must refuse: why, a fragment of the refusal's message, the key
/// it tries, its fields and its file.
struct Refused {
    why: &'static str,
    reason: &'static str,
    key: String,
    fields: Vec<(String, String)>,
    file: Vec<u8>,
}

impl Refused {
    fn new(why: &'static str, reason: &'static str, key: String, fields: Vec<(String, String)>, file: Vec<u8>) -> Self {
        Refused {
            why,
            reason,
            key,
            fields,
            file,
        }
    }
}

fn assert_denied((status, body): (u16, String), why: &str) {
    assert_eq!(status, 403, "{why}: {body}");
    assert!(
        body.contains("<Code>AccessDenied</Code>") && body.contains("Invalid according to Policy"),
        "{why}: {body}"
    );
}

#[tokio::test]
async fn policies_are_enforced_on_form_posts() {
    let s = s3_setup().await;
    s.layer.enforce_post_policies("testing");
    let k = run();
    let prefix = run_prefix(&k);
    let post = s.presign(&prefix, 64).await;
    assert!(post.url.starts_with(&s.layer.endpoint()), "{}", post.url);
    let live = s.presign(&live_prefix(&k), 64).await;

    // The POST store passes every check, for files and for live-log chunks.
    let store = PostArtifactStore::new(post.clone(), live, reqwest::Client::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, b"posted through the policy").expect("write");
    let artifact = store
        .put_file(&k, "result.md", &path, "text/markdown")
        .await
        .expect("allowed");
    store
        .append_log(&k, "output.log", 0, b"line\n")
        .await
        .expect("allowed chunk");
    assert_eq!(s.layer.calls("s3:PostObject"), 2);
    assert!(s.exists(&object_key(&k, "result.md")).await);
    let back = s.store.open(&k, "result.md").await.expect("open").expect("stored");
    assert_eq!(
        (back.size, back.content_type.as_str()),
        (artifact.size, "text/markdown")
    );
    let log = s
        .store
        .read_range(&k, "output.log", 0, 100)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(&log.data[..], b"line\n");

    // A hand-made form like the store's passes too (the baseline of the refusals below).
    let ok_key = format!("{prefix}ok.txt");
    let (status, body) = post_form(&post.url, &form(&post, &ok_key), b"fine").await;
    assert_eq!(status, 204, "{body}");
    assert!(s.exists(&ok_key).await);

    let mut cases: Vec<Refused> = Vec::new();
    let key = |name: &str| format!("{prefix}{name}");

    let outside = format!("runs/acme/{}/x.txt", RunId::generate().as_str());
    cases.push(Refused::new(
        "a key outside the prefix",
        "$key",
        outside.clone(),
        form(&post, &outside),
        b"x".to_vec(),
    ));

    let mut tampered = form(&post, &key("tampered.txt"));
    let policy = post.field("policy").expect("policy");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut json: serde_json::Value = serde_json::from_slice(&b64.decode(policy).expect("base64")).expect("json");
    json["conditions"][1] = serde_json::json!(["starts-with", "$key", ""]);
    set(&mut tampered, "policy", b64.encode(json.to_string()));
    cases.push(Refused::new(
        "a tampered policy",
        "Signature does not match",
        key("tampered.txt"),
        tampered,
        b"x".to_vec(),
    ));

    let mut wrong = form(&post, &key("wrong.txt"));
    set(&mut wrong, "x-amz-signature", "0".repeat(64));
    cases.push(Refused::new(
        "a wrong signature",
        "Signature does not match",
        key("wrong.txt"),
        wrong,
        b"x".to_vec(),
    ));

    let region = "us-east-1";
    let sign = |secret: &str, at: chrono::DateTime<chrono::Utc>, max: u64| {
        sign_post(
            "testing",
            secret,
            None,
            region,
            &post.url,
            s.store.bucket(),
            &prefix,
            Duration::from_secs(60),
            max,
            at,
        )
        .expect("signed")
    };
    let other_secret = sign("not-the-secret", chrono::Utc::now(), 64);
    cases.push(Refused::new(
        "a policy signed with another secret",
        "Signature does not match",
        key("secret.txt"),
        form(&other_secret, &key("secret.txt")),
        b"x".to_vec(),
    ));

    let expired = sign("testing", chrono::Utc::now() - chrono::Duration::hours(1), 64);
    cases.push(Refused::new(
        "an expired policy",
        "Policy expired",
        key("expired.txt"),
        form(&expired, &key("expired.txt")),
        b"x".to_vec(),
    ));

    cases.push(Refused::new(
        "an oversized file",
        "content-length-range",
        key("big.bin"),
        form(&post, &key("big.bin")),
        vec![0u8; 65],
    ));

    let mut no_sse = form(&post, &key("nosse.txt"));
    no_sse.retain(|(k, _)| k != "x-amz-server-side-encryption");
    cases.push(Refused::new(
        "a missing SSE field",
        "x-amz-server-side-encryption",
        key("nosse.txt"),
        no_sse,
        b"x".to_vec(),
    ));

    let mut extra = form(&post, &key("extra.txt"));
    extra.push(("x-amz-meta-owner".into(), "me".into()));
    cases.push(Refused::new(
        "an extra uncovered field",
        "Extra input fields: x-amz-meta-owner",
        key("extra.txt"),
        extra,
        b"x".to_vec(),
    ));

    let before = s.layer.calls("s3:PostObject");
    for Refused {
        why,
        reason,
        key,
        fields,
        file,
    } in &cases
    {
        let (status, body) = post_form(&post.url, fields, file).await;
        assert!(body.contains(reason), "{why}: {body}");
        assert_denied((status, body), why);
        assert!(!s.exists(key).await, "{why}: {key} was stored");
    }
    assert_eq!(s.layer.calls("s3:PostObject") - before, cases.len() as u64);

    // A store whose post moto would take but S3 would not gets S3's refusal, not retried.
    let bad_store = PostArtifactStore::new(
        sign("not-the-secret", chrono::Utc::now(), 64),
        post.clone(),
        reqwest::Client::new(),
    );
    let before = s.layer.calls("s3:PostObject");
    let e = bad_store
        .put_file(&k, "refused.md", &path, "text/markdown")
        .await
        .expect_err("refused");
    assert_eq!(s.layer.calls("s3:PostObject") - before, 1);
    match &e {
        ArtifactError::Backend(inner) => match inner.downcast_ref::<PostError>() {
            Some(PostError::Rejected {
                status, code, message, ..
            }) => {
                assert_eq!((*status, code.as_str()), (403, "AccessDenied"));
                assert!(message.starts_with("Invalid according to Policy"), "{message}");
            }
            _ => panic!("{e}"),
        },
        other => panic!("{other}"),
    }
    assert!(!s.exists(&object_key(&k, "refused.md")).await);
}

#[tokio::test]
async fn anonymous_s3_requests_are_refused() {
    let s = s3_setup().await;
    let k = run();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, b"private").expect("write");
    s.store
        .put_file(&k, "result.md", &path, "text/markdown")
        .await
        .expect("put");
    let url = format!(
        "{}/{}/{}",
        s.layer.endpoint(),
        s.store.bucket(),
        object_key(&k, "result.md")
    );
    let http = reqwest::Client::new();

    let list = format!("{}/{}?list-type=2", s.layer.endpoint(), s.store.bucket());
    let planted = format!(
        "{}/{}/{}",
        s.layer.endpoint(),
        s.store.bucket(),
        object_key(&k, "planted.txt")
    );

    // Moto alone lists and takes writes anonymously (it refuses only the anonymous GET)...
    let listed = http.get(&list).send().await.expect("list");
    assert_eq!(listed.status(), 200);
    let put = http.put(&planted).body("anonymous").send().await.expect("PUT");
    assert_eq!(put.status(), 200);
    assert!(s.exists(&object_key(&k, "planted.txt")).await);

    // ...which the layer refuses, as S3 does for a private bucket.
    s.layer.deny_anonymous_s3();
    for (op, res) in [
        ("GetObject", http.get(&url).send().await),
        ("ListObjectsV2", http.get(&list).send().await),
        (
            "PutObject",
            http.put(format!("{planted}2")).body("anonymous").send().await,
        ),
    ] {
        let res = res.expect(op);
        assert_eq!(res.status(), 403, "{op}");
        let body = res.text().await.expect("body");
        assert!(body.contains("<Code>AccessDenied</Code>"), "{op}: {body}");
    }
    assert!(!s.exists(&format!("{}2", object_key(&k, "planted.txt"))).await);

    // ...but signed requests pass: the SDK's, and a presigned URL's.
    let got = s
        .clients
        .s3
        .get_object()
        .bucket(s.store.bucket())
        .key(object_key(&k, "result.md"))
        .send()
        .await
        .expect("signed GetObject");
    assert_eq!(&got.body.collect().await.expect("body").into_bytes()[..], b"private");
    let presigned = s
        .store
        .presigned_url(&k, "result.md", Duration::from_secs(60))
        .await
        .expect("presign")
        .expect("a URL");
    let res = http.get(&presigned).send().await.expect("GET");
    assert_eq!(res.status(), 200);
    assert_eq!(&res.bytes().await.expect("body")[..], b"private");

    // Form POSTs are the policy's business, not this check's.
    let post = s.presign(&run_prefix(&k), 64).await;
    let (status, body) = post_form(&post.url, &form(&post, &object_key(&k, "posted.txt")), b"p").await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn s3_faults_have_s3s_shape() {
    let s = s3_setup().await;
    let k = run();
    s.layer.inject(
        "s3:GetObject",
        Rule::First {
            n: 1,
            fault: Fault::error(503, "SlowDown", "Please reduce your request rate."),
        },
    );
    let no_retry = aws_sdk_s3::Client::from_conf(
        s.clients
            .s3
            .config()
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    );
    let err = no_retry
        .get_object()
        .bucket(s.store.bucket())
        .key(object_key(&k, "missing"))
        .send()
        .await
        .expect_err("fault");
    assert_eq!(err.code(), Some("SlowDown"));
    assert_eq!(err.message(), Some("Please reduce your request rate."));
    // The next one reaches moto, which has no such key.
    let err = no_retry
        .get_object()
        .bucket(s.store.bucket())
        .key(object_key(&k, "missing"))
        .send()
        .await
        .expect_err("missing");
    assert!(err.as_service_error().is_some_and(|e| e.is_no_such_key()), "{err:?}");
    assert_eq!(s.layer.calls("s3:GetObject"), 2);
}
