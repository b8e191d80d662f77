//! `GET /me` and `PUT /me` (the app's user table) and `POST /phone` binding the number, in-process
//! against moto's DynamoDB and the sandbox.

use e2e::TestEnv;
use serde_json::{Value, json};
use wechat_sandbox::PhoneSpec;

async fn me(env: &TestEnv, token: &str) -> Value {
    let r = env.call("GET", "/me", Some(token), b"").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test]
async fn the_user_record_follows_logins_phone_and_profile() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    let first = me(&env, &token).await;
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "avatar_url",
            "first_seen",
            "last_login",
            "nickname",
            "openid",
            "phone",
            "unionid"
        ],
        "exactly the contract's fields: no session_key, no token"
    );
    assert_eq!(first["openid"], env.sandbox().openid_for("alice"));
    assert!(first["first_seen"].as_u64().is_some());
    assert_eq!(first["first_seen"], first["last_login"]);
    assert!(first["phone"].is_null() && first["nickname"].is_null());
    let raw = String::from_utf8(
        env.call("GET", "/me", Some(&token), b"")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(!raw.contains(&token), "the token is not echoed");

    // POST /phone binds the number.
    let code = env.sandbox().mint_phone_code(PhoneSpec {
        phone_number: "13800138000".into(),
        pure_phone_number: "13800138000".into(),
        country_code: "86".into(),
    });
    let r = env
        .call(
            "POST",
            "/phone",
            Some(&token),
            json!({ "code": code }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(me(&env, &token).await["phone"], "13800138000");
    let stored = env.scan().await;
    let user = stored
        .iter()
        .find(|i| i["pk"].as_s().unwrap().starts_with("user#"))
        .expect("the user item");
    assert!(user.contains_key("phone_bound_at"));

    // PUT /me sets what it is given and keeps the rest.
    let r = env
        .call(
            "PUT",
            "/me",
            Some(&token),
            json!({ "nickname": "小明", "avatar_url": "https://cdn.example.com/a/1.png" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["nickname"], "小明");
    assert_eq!(r.json()["phone"], "13800138000");
    let r = env
        .call(
            "PUT",
            "/me",
            Some(&token),
            br#"{"nickname":"Ming","avatar_url":null}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let after = me(&env, &token).await;
    assert_eq!(after["nickname"], "Ming");
    assert_eq!(after["avatar_url"], "https://cdn.example.com/a/1.png");
    assert_eq!(after["first_seen"], first["first_seen"]);

    // Another user sees only their own record.
    let bob = env.login("bob").await;
    let theirs = me(&env, &bob).await;
    assert_eq!(theirs["openid"], env.sandbox().openid_for("bob"));
    assert!(theirs["nickname"].is_null() && theirs["phone"].is_null());
}

#[tokio::test]
async fn bad_profiles_are_refused_naming_the_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let token = env.login("carol").await;
    let cases: [(&[u8], &str); 7] = [
        (br#"{"nickname":""}"#, "nickname"),
        (
            format!(r#"{{"nickname":"{}"}}"#, "字".repeat(65))
                .leak()
                .as_bytes(),
            "nickname",
        ),
        (
            br#"{"avatar_url":"http://cdn.example.com/a.png"}"#,
            "avatar_url",
        ),
        (br#"{"avatar_url":"https://a b/c"}"#, "avatar_url"),
        (br#"{"nickname":"x","nick":"typo"}"#, "nick"),
        (br#"{"nickname":7}"#, "nickname"),
        (br#"["nickname"]"#, ""),
    ];
    for (body, field) in cases {
        let r = env.call("PUT", "/me", Some(&token), body).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(r.error_code(), "invalid_request");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(field), "{message}");
    }
    assert!(me(&env, &token).await["nickname"].is_null());
    let r = env.call("PUT", "/me", None, br#"{"nickname":"x"}"#).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthenticated")
    );
    let r = env.call("GET", "/me", Some("not-a-token"), b"").await;
    assert_eq!(r.status, 401);
    let r = env.call("DELETE", "/me", Some(&token), b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT"));
}
