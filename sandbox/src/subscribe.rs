//! Subscribe messages (订阅消息): the grants users gave (kept from the pushes the sandbox sends,
//! or set directly), and `/cgi-bin/message/subscribe/send`'s checks.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::SandboxConfig;
use crate::error::{self, WxError};

#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// (openid, template id) -> one-time grants left.
    one_time: BTreeMap<(String, String), u32>,
    /// (openid, template id) with a standing grant ("always allow" in the settings).
    standing: BTreeSet<(String, String)>,
    /// Every message sent, in order.
    pub sent: Vec<Value>,
}

impl Subscriptions {
    /// What a user's answer in a push means for WeChat's own record.
    pub(crate) fn record_push(&mut self, message: &serde_json::Map<String, Value>) {
        let event = message.get("Event").and_then(Value::as_str).unwrap_or("");
        let Some(openid) = message.get("FromUserName").and_then(Value::as_str) else {
            return;
        };
        let items = match message.get("List") {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => return,
        };
        for item in items {
            let Some(tid) = item.get("TemplateId").and_then(Value::as_str) else {
                continue;
            };
            let key = (openid.to_string(), tid.to_string());
            match (
                event,
                item.get("SubscribeStatusString").and_then(Value::as_str),
            ) {
                ("subscribe_msg_popup_event", Some("accept")) => {
                    *self.one_time.entry(key).or_default() += 1
                }
                ("subscribe_msg_popup_event", Some("reject" | "ban")) => {
                    self.one_time.remove(&key);
                }
                ("subscribe_msg_change_event", Some("accept")) => {
                    self.standing.insert(key);
                }
                ("subscribe_msg_change_event", Some("reject" | "ban")) => {
                    self.standing.remove(&key);
                    self.one_time.remove(&key);
                }
                _ => {}
            }
        }
    }

    pub(crate) fn grant(&mut self, openid: &str, template_id: &str, count: u32, standing: bool) {
        let key = (openid.to_string(), template_id.to_string());
        if standing {
            self.standing.insert(key.clone());
        }
        if count > 0 {
            *self.one_time.entry(key).or_default() += count;
        }
    }

    /// `/cgi-bin/message/subscribe/send`: the checks in WeChat's order, then one grant used.
    pub(crate) fn send(&mut self, cfg: &SandboxConfig, body: &[u8]) -> Result<(), WxError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| error::DATA_FORMAT)?;
        let touser = v.get("touser").and_then(Value::as_str).unwrap_or("");
        // The sandbox's openids: 'o' and 27 more characters.
        if touser.len() != 28 || !touser.starts_with('o') {
            return Err(error::INVALID_OPENID);
        }
        let tid = v.get("template_id").and_then(Value::as_str).unwrap_or("");
        let long_term = cfg.long_term_templates.iter().any(|t| t == tid);
        if !long_term && !cfg.subscribe_templates.iter().any(|t| t == tid) {
            return Err(error::INVALID_TEMPLATE);
        }
        if let Some(page) = v
            .get("page")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            let path = page.split('?').next().unwrap_or("");
            if !cfg.published_pages.iter().any(|p| p == path) {
                return Err(error::INVALID_PAGE);
            }
        }
        let data = v
            .get("data")
            .and_then(Value::as_object)
            .filter(|d| !d.is_empty())
            .ok_or(error::ARGUMENT_INVALID)?;
        for value in data.values() {
            let ok = value
                .get("value")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty() && s.chars().count() <= 20);
            if !ok {
                return Err(error::ARGUMENT_INVALID);
            }
        }
        let key = (touser.to_string(), tid.to_string());
        if !long_term && !self.standing.contains(&key) {
            match self.one_time.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => return Err(error::USER_REFUSED),
            }
        }
        self.sent.push(v);
        Ok(())
    }
}
