//! The routes the handlers serve, the ones openapi.yaml describes and the ones template.yaml wires
//! to each function are the same set.

use std::collections::BTreeSet;

use serde_yaml::Value;
use wxmp::Surface;
use wxmp::routes::ROUTES;

type Route = (String, String, &'static str);

fn yaml(file: &str) -> Value {
    let path = e2e::moto::workspace_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn function_of(surface: Surface) -> &'static str {
    match surface {
        Surface::Sessions => "login",
        Surface::Codes => "qrcode",
        Surface::Push => "push",
        Surface::All => unreachable!("no route belongs to every function"),
    }
}

fn handler_routes() -> BTreeSet<Route> {
    ROUTES
        .iter()
        .map(|(m, p, s)| (m.to_string(), p.to_string(), function_of(*s)))
        .collect()
}

#[test]
fn openapi_describes_exactly_the_handled_routes() {
    let doc = yaml("openapi.yaml");
    let mut described = BTreeSet::new();
    for (path, ops) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in ops.as_mapping().expect("operations") {
            described.insert((
                method.as_str().unwrap().to_uppercase(),
                path.as_str().unwrap().to_string(),
            ));
        }
    }
    let handled: BTreeSet<_> = handler_routes()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(described, handled);
}

#[test]
fn the_template_wires_each_route_to_its_function() {
    let doc = yaml("template.yaml");
    let mut wired = BTreeSet::new();
    for (_, res) in doc["Resources"].as_mapping().expect("Resources") {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = res["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("every function names its binary");
        let Some(events) = res["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, ev) in events {
            if ev["Type"].as_str() == Some("HttpApi") {
                let p = &ev["Properties"];
                if p["Path"].as_str() == Some("$default") {
                    // The catch-all that turns API Gateway's own 404s into the contract's JSON.
                    assert_eq!(
                        binary, "login",
                        "the $default route belongs to the login function"
                    );
                    continue;
                }
                let function = match binary {
                    "login" => "login",
                    "qrcode" => "qrcode",
                    "push" => "push",
                    other => panic!("HTTP route on unexpected function {other}"),
                };
                wired.insert((
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_string(),
                    function,
                ));
            }
        }
    }
    assert_eq!(wired, handler_routes());
}

#[test]
fn every_function_binary_in_the_template_is_a_workspace_binary() {
    let doc = yaml("template.yaml");
    let root = e2e::moto::workspace_root();
    for (_, res) in doc["Resources"].as_mapping().unwrap() {
        if res["Type"].as_str() == Some("AWS::Serverless::Function") {
            let binary = res["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap();
            assert_eq!(
                res["Metadata"]["BuildMethod"].as_str(),
                Some("rust-cargolambda")
            );
            assert!(
                root.join("functions")
                    .join(binary)
                    .join("Cargo.toml")
                    .exists(),
                "functions/{binary}"
            );
        }
    }
}

#[tokio::test]
async fn each_function_serves_its_routes_and_only_those() {
    let config = wxmp::Config::from_lookup(|k| match k {
        "WECHAT_APPID" => Some("wxroutes".into()),
        "WECHAT_SECRET" => Some("s".into()),
        "WECHAT_API_BASE" => Some("http://127.0.0.1:9".into()),
        "WECHAT_PUSH_TOKEN" => Some("push-token".into()),
        _ => None,
    })
    .unwrap();
    let app = std::sync::Arc::new(wxmp::App::new(
        config,
        std::sync::Arc::new(wxmp::store::MemoryStore::new()),
    ));
    for surface in [Surface::Sessions, Surface::Codes, Surface::Push] {
        for (method, path, owner) in ROUTES {
            let req = http::Request::builder()
                .method(*method)
                .uri(*path)
                .body(axum::body::Body::empty())
                .unwrap();
            let router = wxmp::routes::router(app.clone(), surface);
            let status = tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap()
                .status();
            // Without credentials, a body or a signature, a served route refuses with
            // 400/401/403, never 404.
            if *owner == surface {
                assert!(
                    status == 400 || status == 401 || status == 403,
                    "{method} {path} on {surface:?}: {status}"
                );
            } else {
                assert_eq!(
                    status, 404,
                    "{method} {path} must not be served by {surface:?}"
                );
            }
        }
    }
}

/// The AppSecret reaches the functions only through Secrets Manager: no function's environment
/// carries it, every function gets the secret's ARN and may read that one secret and no other.
#[test]
fn the_app_secret_is_in_secrets_manager_never_in_an_environment() {
    let doc = yaml("template.yaml");
    let globals = &doc["Globals"]["Function"]["Environment"]["Variables"];
    let secret_ref = |v: &Value| -> String { serde_yaml::to_string(v).unwrap() };
    let arn = secret_ref(&globals["WECHAT_SECRET_ARN"]);
    assert!(
        arn.contains("AppSecret") && arn.contains("ExistingSecretArn"),
        "{arn}"
    );
    let mut functions = 0;
    for (name, res) in doc["Resources"].as_mapping().unwrap() {
        let text = serde_yaml::to_string(res).unwrap();
        if res["Type"].as_str() == Some("AWS::SecretsManager::Secret") {
            continue;
        }
        assert!(
            !text.contains("WeChatAppSecret") && !text.contains("WECHAT_SECRET:"),
            "{name:?} must not see the AppSecret"
        );
        assert!(
            !text.contains("PushToken") && !text.contains("PushAesKey"),
            "{name:?} must not see the push Token or EncodingAESKey"
        );
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let env = &res["Properties"]["Environment"]["Variables"];
        assert!(
            env["WECHAT_SECRET"].is_null() && env["WECHAT_APPID"].is_null(),
            "{name:?}"
        );
        let statements = res["Properties"]["Policies"][0]["Statement"]
            .as_sequence()
            .expect("a policy statement list");
        let reads: Vec<_> = statements
            .iter()
            .filter(|s| secret_ref(&s["Action"]).contains("secretsmanager"))
            .collect();
        assert_eq!(reads.len(), 1, "{name:?}: one statement for the secret");
        assert_eq!(
            secret_ref(&reads[0]["Action"]).trim(),
            "- secretsmanager:GetSecretValue",
            "{name:?}"
        );
        assert_eq!(
            secret_ref(&reads[0]["Resource"]),
            arn,
            "{name:?}: that secret only"
        );
    }
    assert_eq!(functions, 5);
    let secret = &doc["Resources"]["AppSecret"];
    assert_eq!(secret["Condition"].as_str(), Some("CreateSecret"));
}

/// The dashboard's body is the JSON CloudWatch takes once `!Sub` fills it in, with the code
/// success rate first; every custom metric the dashboard and the alarms name is one the
/// functions emit (tests/tests/suite/metrics.rs counts them).
#[test]
fn the_dashboard_and_alarms_read_the_functions_metrics() {
    let doc = yaml("template.yaml");
    let body = &doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"];
    let Value::Tagged(sub) = body else {
        panic!("DashboardBody is a !Sub: {body:?}")
    };
    let template = sub.value[0].as_str().expect("the !Sub template");
    let filled = template
        .replace("${AWS::Region}", "ap-east-1")
        .replace("${Ns}", "WeChatMiniProgram");
    assert!(!filled.contains("${"), "every ${{...}} is filled in");
    let json: serde_json::Value = serde_json::from_str(&filled).expect("the dashboard is JSON");
    let widgets = json["widgets"].as_array().expect("widgets");
    assert_eq!(widgets.len(), 6);
    assert!(
        widgets[0]["properties"]["title"]
            .as_str()
            .unwrap()
            .contains("success rate")
    );
    let emitted = [
        "CodesOk",
        "CodesFailed",
        "Logins",
        "TokenFetches",
        "TokenRejections",
        "ForceRefreshes",
        "TokenFetchFailures",
        "WeChatCalls",
        "Latency",
        "TokenRemainingSecs",
    ];
    let text = serde_yaml::to_string(&doc["Resources"]).unwrap();
    for name in [
        "CodesOk",
        "CodesFailed",
        "TokenFetchFailures",
        "TokenRemainingSecs",
        "Latency",
    ] {
        assert!(filled.contains(name) || text.contains(name), "{name}");
    }
    for (_, res) in doc["Resources"].as_mapping().unwrap() {
        if res["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        for m in res["Properties"]["Metrics"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let metric = &m["MetricStat"]["Metric"];
            if metric["Namespace"].as_str() == Some("AWS/ApiGateway") || metric.is_null() {
                continue;
            }
            if let Some(name) = metric["MetricName"].as_str() {
                assert!(
                    emitted.contains(&name),
                    "alarm on {name}, which nothing emits"
                );
            }
        }
    }
}
