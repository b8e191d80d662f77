use e2e::TestEnv;

#[tokio::test]
async fn login_then_session_then_logout() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    let r = env.call("GET", "/session", Some(&token), b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openid"], env.sandbox().openid_for("alice"));
    let r = env.call("DELETE", "/session", Some(&token), b"").await;
    assert_eq!(r.status, 204);
    let r = env.call("GET", "/session", Some(&token), b"").await;
    assert_eq!(r.status, 401);
}
