//! The project's own DynamoDB and S3 clients (`wxmp::aws`) against a moto server that checks
//! every request's SigV4 signature with botocore's signer (`INITIAL_NO_AUTH_ACTION_COUNT`) and
//! the caller's IAM policy, as AWS does. The shared moto of the other tests checks neither.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use e2e::moto;
use wxmp::codecache::CodeCache;
use wxmp::secret::Secret;
use wxmp::store::{DynamoStore, SessionRecord, SessionStore, StoredToken, TokenStore};
use wxmp::wechat::Image;

/// A moto server that authenticates every request after the first three (the IAM set-up below),
/// and an access key of a user allowed everything.
async fn authenticating_moto() -> (String, String, String) {
    let endpoint = tokio::task::spawn_blocking(|| {
        moto::start_private_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")])
    })
    .await
    .unwrap()
    .expect("moto starts");
    let http = reqwest::Client::new();
    let iam = |form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let endpoint = endpoint.clone();
        async move {
            // Not yet checked, but moto routes a request to IAM by the credential scope.
            let r = http
                .post(format!("{endpoint}/"))
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=setup/20261124/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&form))
                .send()
                .await
                .expect("moto answers");
            let status = r.status();
            let body = r.text().await.unwrap();
            assert!(status.is_success(), "{status}: {body}");
            body
        }
    };
    let user = || ("UserName", "wxmp".to_string());
    let version = || ("Version", "2010-05-08".to_string());
    iam(vec![("Action", "CreateUser".into()), user(), version()]).await;
    iam(vec![
        ("Action", "PutUserPolicy".into()),
        user(),
        ("PolicyName", "all".into()),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#.into(),
        ),
        version(),
    ])
    .await;
    let key = iam(vec![
        ("Action", "CreateAccessKey".into()),
        user(),
        version(),
    ])
    .await;
    let element = |name: &str| {
        let start = key.find(&format!("<{name}>")).unwrap() + name.len() + 2;
        let end = key[start..].find(&format!("</{name}>")).unwrap() + start;
        key[start..end].to_string()
    };
    (endpoint, element("AccessKeyId"), element("SecretAccessKey"))
}

async fn sdk(endpoint: &str, id: &str, secret: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(wxmp::net::aws_http_client())
        .region(Region::new(moto::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            id, secret, None, None, "test",
        ))
        .load()
        .await
}

#[tokio::test]
async fn dynamodb_and_s3_calls_carry_signatures_aws_accepts() {
    let (endpoint, id, secret) = authenticating_moto().await;

    // A wrong secret is refused: the server really checks.
    let forged = sdk(&endpoint, &id, "not-the-secret").await;
    let e = wxmp::store::ensure_table(&wxmp::aws::dynamodb(&forged), "signed")
        .await
        .expect_err("a bad signature is refused");
    assert!(e.0.contains("Signature"), "{e}");

    let sdk = sdk(&endpoint, &id, &secret).await;
    let dynamo = wxmp::aws::dynamodb(&sdk);
    wxmp::store::ensure_table(&dynamo, "signed")
        .await
        .expect("table created with signed requests");
    let store = DynamoStore::new(dynamo, "signed");
    let record = SessionRecord {
        openid: "o-1".into(),
        unionid: Some("u-1".into()),
        session_key: Secret::new("k".to_string()),
        created_at: 1,
        expires_at: u64::MAX / 2,
    };
    store.put_session("h", &record).await.expect("PutItem");
    assert_eq!(
        store.get_session("h", 2).await.expect("GetItem"),
        Some(record)
    );
    // Conditional writes: the first lease wins, the second is refused (not an error).
    assert!(store.try_lease("l", "a", 1_000, 3_000).await.unwrap());
    // The same write again (a retry whose first attempt was applied) meets its own lease.
    assert!(store.try_lease("l", "a", 1_000, 3_000).await.unwrap());
    assert!(!store.try_lease("l", "b", 1_000, 3_000).await.unwrap());
    assert!(!store.try_lease("l", "a", 1_001, 3_000).await.unwrap());
    assert!(store.renew_lease("l", "a", 2_000, 3_000).await.unwrap());
    assert!(store.renew_lease("l", "a", 2_000, 3_000).await.unwrap());
    assert!(!store.renew_lease("l", "b", 2_000, 3_000).await.unwrap());
    let token = StoredToken {
        token: Secret::new("t".to_string()),
        expires_at: u64::MAX / 2,
        fetched_at_ms: 5,
    };
    store.put_token("app", &token).await.expect("PutItem");
    assert!(
        store
            .delete_token_if("app", &Secret::new("t".to_string()))
            .await
            .expect("UpdateItem")
    );
    store.delete_session("h").await.expect("DeleteItem");
    assert_eq!(store.get_session("h", 2).await.unwrap(), None);

    // S3: bucket, PUT with a content type, GET of the same bytes, a missing key.
    let cache = CodeCache::new(wxmp::aws::s3(&sdk), "signed-codes");
    cache.ensure_bucket().await.expect("bucket created");
    let png = Image::from_bytes(bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nrest"))
        .expect("a PNG by its bytes");
    let key = CodeCache::key("wx1", "scene=a b&page=x/y");
    cache.put(&key, &png).await.expect("PutObject");
    let got = cache.get(&key).await.expect("GetObject");
    assert_eq!(got.bytes, png.bytes);
    assert!(cache.get("codes/missing").await.is_none());

    let forged_s3 = CodeCache::new(wxmp::aws::s3(&forged), "signed-codes");
    let e = forged_s3.put(&key, &png).await.expect_err("refused");
    assert!(e.contains("SignatureDoesNotMatch"), "{e}");
}

/// `application/x-www-form-urlencoded`.
fn form_body(pairs: &[(&str, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
