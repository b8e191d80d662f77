//! `POST /wxa/business/getuserphonenumber`: the phone number behind a getPhoneNumber button
//! code. The code is single use: resent only when WeChat surely did not receive it.

use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneInfo {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
    /// The app id WeChat stamped on the data; callers check it is theirs.
    #[serde(skip)]
    pub watermark_appid: String,
}

impl WeChatClient {
    /// `POST /wxa/business/getuserphonenumber` with the code from the getPhoneNumber button.
    pub async fn phone_number(&self, token: &Secret, code: &str) -> Result<PhoneInfo, WxError> {
        #[derive(Deserialize)]
        struct Watermark {
            appid: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            phone_number: String,
            pure_phone_number: String,
            country_code: Value,
            watermark: Watermark,
        }
        #[derive(Deserialize)]
        struct Raw {
            phone_info: Info,
        }
        let raw: Raw = self
            .call_json(
                reqwest::Method::POST,
                "/wxa/business/getuserphonenumber",
                &[("access_token", token.expose())],
                Some(&json!({ "code": code })),
                Resend::OnlyWhenUnused,
            )
            .await?;
        let i = raw.phone_info;
        Ok(PhoneInfo {
            phone_number: i.phone_number,
            pure_phone_number: i.pure_phone_number,
            // Documented as a string, shown as a number in WeChat's own example: take either.
            country_code: match i.country_code {
                Value::String(s) => s,
                other => other.to_string(),
            },
            watermark_appid: i.watermark.appid,
        })
    }
}
