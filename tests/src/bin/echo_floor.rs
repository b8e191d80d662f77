//! The benchmark's floor: a `lambda_http` function that answers every request at once with a
//! small JSON body, on the same runtime flavour as the project's functions. What any Rust Lambda
//! behind API Gateway costs before it does any work.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_req: Request| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::Text(r#"{"ok":true}"#.to_string()))
            .map_err(Error::from)
    }))
    .await
}
