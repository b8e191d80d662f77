//! A push's body, XML or JSON, as one JSON shape: what goes on the bus as `detail`.
//!
//! - XML: each element becomes a field; text in CDATA stays a string, bare integer text becomes
//!   a number (WeChat puts strings in CDATA); repeated elements become an array.
//! - `List` is always an array, whether WeChat sent one item (an object in JSON, one element in
//!   XML) or several. XML wraps the subscribe events' items in an element
//!   (`<SubscribeMsgPopupEvent><List>...`): they are lifted to the top-level `List`, where JSON
//!   puts them.
//! - The fields WeChat documents as numbers (`CreateTime`, `MsgId`, `PopupScene`, `ErrorCode`,
//!   ...) are numbers in both formats, whatever WeChat's JSON sent.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Elements nested deeper than this are refused (WeChat's pushes nest three levels).
const MAX_DEPTH: usize = 16;

/// Fields that WeChat's XML gives as bare numbers and its JSON sometimes as strings.
const NUMERIC: &[&str] = &[
    "CreateTime",
    "MsgId",
    "MsgID",
    "PopupScene",
    "ErrorCode",
    "errcode",
    "status_code",
    "isrisky",
    "Version",
];

/// The body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// By the first character that is not white space: `<` XML, `{` JSON.
    pub fn sniff(body: &str) -> Option<Format> {
        match body
            .trim_start_matches('\u{feff}')
            .trim_start()
            .chars()
            .next()
        {
            Some('<') => Some(Format::Xml),
            Some('{') => Some(Format::Json),
            _ => None,
        }
    }
}

/// Parses a body (or a decrypted message) into its fields, normalised.
pub fn parse(body: &str) -> Result<(Format, Map<String, Value>), String> {
    let format = Format::sniff(body).ok_or("the body is neither XML nor a JSON object")?;
    let fields = match format {
        Format::Xml => parse_xml(body.trim_start_matches('\u{feff}'))?,
        Format::Json => match serde_json::from_str::<Value>(body.trim_start_matches('\u{feff}')) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("the JSON body is not an object".into()),
            Err(e) => return Err(format!("the JSON body is malformed: {}", e.classify_text())),
        },
    };
    Ok((format, normalise(fields)))
}

trait Classify {
    fn classify_text(&self) -> String;
}

impl Classify for serde_json::Error {
    /// The error's kind and place, not its text (which can quote the body).
    fn classify_text(&self) -> String {
        format!(
            "{:?} at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn parse_xml(body: &str) -> Result<Map<String, Value>, String> {
    let mut r = Reader::from_str(body);
    loop {
        match r.read_event().map_err(|_| xml_error(&r))? {
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Start(e) if e.name().as_ref() == b"xml" => break,
            Event::Empty(e) if e.name().as_ref() == b"xml" => return Ok(Map::new()),
            Event::DocType(_) => return Err("the XML body has a DOCTYPE".into()),
            _ => return Err("the XML body's root element is not <xml>".into()),
        }
    }
    let root = element(&mut r, 1)?;
    loop {
        match r.read_event().map_err(|_| xml_error(&r))? {
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            _ => return Err("the XML body has content after </xml>".into()),
        }
    }
    match root {
        Value::Object(m) => Ok(m),
        Value::String(s) if s.trim().is_empty() => Ok(Map::new()),
        _ => Err("the XML body's <xml> holds text, not fields".into()),
    }
}

/// Where the XML went wrong, not what it said (quick-xml's messages quote tag names).
fn xml_error(r: &Reader<&[u8]>) -> String {
    format!("the XML body is malformed at byte {}", r.buffer_position())
}

/// The content of the element just opened, up to its end tag.
fn element(r: &mut Reader<&[u8]>, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the XML body is nested too deeply".into());
    }
    let mut text = String::new();
    let mut cdata = false;
    let mut children = Map::new();
    loop {
        match r.read_event().map_err(|_| xml_error(r))? {
            Event::Start(e) => {
                let name = name_of(e.name().as_ref())?;
                let value = element(r, depth + 1)?;
                insert(&mut children, name, value);
            }
            Event::Empty(e) => {
                let name = name_of(e.name().as_ref())?;
                insert(&mut children, name, Value::String(String::new()));
            }
            Event::Text(t) => text.push_str(&t.xml_content().map_err(|_| xml_error(r))?),
            Event::CData(c) => {
                text.push_str(&c.xml_content().map_err(|_| xml_error(r))?);
                cdata = true;
            }
            Event::GeneralRef(g) => {
                if let Some(c) = g.resolve_char_ref().map_err(|_| xml_error(r))? {
                    text.push(c);
                } else {
                    let name = g.decode().map_err(|_| xml_error(r))?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or("the XML body uses an undefined entity")?;
                    text.push_str(resolved);
                }
            }
            Event::End(_) => break,
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => return Err("the XML body ends inside an element".into()),
            Event::Decl(_) | Event::DocType(_) => {
                return Err("the XML body has a declaration inside an element".into());
            }
        }
    }
    if !children.is_empty() {
        return Ok(Value::Object(children));
    }
    if cdata {
        return Ok(Value::String(text));
    }
    Ok(integer(text.trim()).unwrap_or(Value::String(text)))
}

fn name_of(raw: &[u8]) -> Result<String, String> {
    std::str::from_utf8(raw)
        .map(str::to_string)
        .map_err(|_| "the XML body has a name that is not UTF-8".into())
}

/// Adds a child: `List` always into an array, a repeated name turns into one.
fn insert(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None if name == "List" => {
            map.insert(name, Value::Array(vec![value]));
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// A canonical integer (no sign but `-`, no leading zeros) as a JSON number.
fn integer(s: &str) -> Option<Value> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(Value::from(n));
    }
    s.parse::<u64>().ok().map(Value::from)
}

/// `List` as an array (lifted from XML's wrapper element), numeric fields as numbers.
fn normalise(mut fields: Map<String, Value>) -> Map<String, Value> {
    if !fields.contains_key("List") {
        let wrapper = fields.iter().find_map(|(k, v)| match v {
            Value::Object(o) if o.len() == 1 && o.contains_key("List") => Some(k.clone()),
            _ => None,
        });
        if let Some(k) = wrapper
            && let Some(Value::Object(mut o)) = fields.remove(&k)
        {
            fields.insert("List".into(), o.remove("List").expect("checked"));
        }
    }
    normalise_map(&mut fields);
    fields
}

fn normalise_map(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if k == "List" && v.is_object() {
            *v = Value::Array(vec![v.take()]);
        }
        match v {
            Value::String(s) if NUMERIC.contains(&k.as_str()) => {
                if let Some(n) = integer(s.trim()) {
                    *v = n;
                }
            }
            Value::Object(o) => normalise_map(o),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(o) = item {
                        normalise_map(o);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The bus's `detail-type`: the push's `Event`, or its `MsgType` for a message.
pub fn detail_type(fields: &Map<String, Value>) -> Option<&str> {
    ["Event", "MsgType"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// What identifies a push across WeChat's retries: `MsgId` where there is one, else the whole
/// normalised message (a retry carries the same content; two events of one user in one second
/// differ somewhere). Hashed: the key's length does not depend on the push.
pub fn dedup_key(fields: &Map<String, Value>) -> String {
    let basis = match fields.get("MsgId") {
        Some(id) if !id.is_null() => format!("msgid\n{id}"),
        // serde_json's Map is ordered by key: the same content is the same text.
        _ => format!("message\n{}", Value::Object(fields.clone())),
    };
    crate::ids::sha256_hex(basis.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POPUP_XML: &str = "<xml>\
        <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\
        <FromUserName><![CDATA[o7esq5OI1Uej6Xixw1lA2H7XDVbc]]></FromUserName>\
        <CreateTime>1620715667</CreateTime>\
        <MsgType><![CDATA[event]]></MsgType>\
        <Event><![CDATA[subscribe_msg_popup_event]]></Event>\
        <SubscribeMsgPopupEvent>\
          <List>\
            <TemplateId><![CDATA[hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgjMmfn2A]]></TemplateId>\
            <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>\
            <PopupScene>2</PopupScene>\
          </List>\
        </SubscribeMsgPopupEvent>\
        </xml>";

    #[test]
    fn xml_and_json_of_one_push_are_the_same_detail() {
        let (f, xml) = parse(POPUP_XML).unwrap();
        assert_eq!(f, Format::Xml);
        let json = r#"{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5OI1Uej6Xixw1lA2H7XDVbc",
            "CreateTime":"1620715667","MsgType":"event","Event":"subscribe_msg_popup_event",
            "List":{"TemplateId":"hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgjMmfn2A",
                    "SubscribeStatusString":"accept","PopupScene":"2"}}"#;
        let (f, j) = parse(json).unwrap();
        assert_eq!(f, Format::Json);
        assert_eq!(xml, j);
        assert_eq!(xml["CreateTime"], json!(1620715667));
        assert_eq!(xml["List"][0]["PopupScene"], json!(2));
        assert_eq!(detail_type(&xml), Some("subscribe_msg_popup_event"));
        assert_eq!(dedup_key(&xml), dedup_key(&j));
    }

    #[test]
    fn several_items_stay_an_array_and_entities_resolve() {
        let body = "<xml><MsgType><![CDATA[event]]></MsgType><Event>e</Event>\
            <SubscribeMsgChangeEvent><List><TemplateId>a</TemplateId></List>\
            <List><TemplateId>b &amp; &#x41;</TemplateId></List></SubscribeMsgChangeEvent></xml>";
        let (_, m) = parse(body).unwrap();
        assert_eq!(
            m["List"],
            json!([{"TemplateId": "a"}, {"TemplateId": "b & A"}])
        );
        // Text outside CDATA that is not an integer stays text; leading zeros stay text.
        let (_, m) = parse("<xml><A>007</A><B>-5</B><C>x1</C><D><![CDATA[12]]></D></xml>").unwrap();
        assert_eq!(
            m,
            *json!({"A": "007", "B": -5, "C": "x1", "D": "12"})
                .as_object()
                .unwrap()
        );
    }

    #[test]
    fn malformed_bodies_are_refused_without_quoting_them() {
        for bad in [
            "<xml><A>1</secret-text></xml>",
            "<xml><secret-text>1</xml>",
            "<xml><A>1</B></xml>",
            "<xml><A>1</A>",
            "<root><A>1</A></root>",
            "<xml>secret-text</xml>",
            "<xml><A>&bogus;</A></xml>",
            "<!DOCTYPE x><xml/>",
            "{\"A\": secret-text}",
            "[1,2]",
            "plain secret-text",
            "",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("secret-text"), "{bad}: {e}");
        }
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn dedup_uses_msgid_or_the_whole_message() {
        let a = json!({"MsgId": 1, "FromUserName": "u", "CreateTime": 2});
        let b = json!({"MsgId": 1, "FromUserName": "v", "CreateTime": 3});
        assert_eq!(
            dedup_key(a.as_object().unwrap()),
            dedup_key(b.as_object().unwrap())
        );
        let m1 = json!({"FromUserName": "u", "CreateTime": 2, "Event": "wxa_media_check", "trace_id": "t1"});
        let m2 = json!({"FromUserName": "u", "CreateTime": 2, "Event": "wxa_media_check", "trace_id": "t2"});
        assert_ne!(
            dedup_key(m1.as_object().unwrap()),
            dedup_key(m2.as_object().unwrap())
        );
        // Two sent events in one second differ only inside List.
        let s1 = json!({"FromUserName": "u", "CreateTime": 2, "Event": "subscribe_msg_sent_event", "List": [{"MsgID": 1}]});
        let s2 = json!({"FromUserName": "u", "CreateTime": 2, "Event": "subscribe_msg_sent_event", "List": [{"MsgID": 2}]});
        assert_ne!(
            dedup_key(s1.as_object().unwrap()),
            dedup_key(s2.as_object().unwrap())
        );
        assert_eq!(
            dedup_key(s1.as_object().unwrap()),
            dedup_key(s1.clone().as_object().unwrap())
        );
    }
}
