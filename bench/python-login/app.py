"""The Python peer for the benchmark: POST /login as a team would write it without this project.

A Lambda handler behind an API Gateway HTTP API (payload 2.0), run by awslambdaric: the code from
wx.login goes to WeChat's jscode2session (urllib), a random session token is handed back, and
DynamoDB gets the session item (keyed by the token's SHA-256, with a TTL) and a user-record upsert
(boto3). The same work, the same table layout and the same answers as the project's `login`
function, so `scripts/bench.sh` can run both against the same moto and WeChat sandbox.
"""

import base64
import hashlib
import json
import os
import secrets
import time
import urllib.parse
import urllib.request

import boto3

APPID = os.environ["WECHAT_APPID"]
SECRET = os.environ["WECHAT_SECRET"]
API_BASE = os.environ.get("WECHAT_API_BASE", "https://api.weixin.qq.com").rstrip("/")
TABLE = os.environ["TABLE_NAME"]
SESSION_TTL = int(os.environ.get("SESSION_TTL_SECS", "604800"))

# Built once per cold start, as the AWS docs advise.
dynamodb = boto3.client("dynamodb")


def answer(status, body):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def error(status, code, message):
    return answer(status, {"error": code, "message": message})


def jscode2session(code):
    query = urllib.parse.urlencode(
        {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    )
    with urllib.request.urlopen(f"{API_BASE}/sns/jscode2session?{query}", timeout=5) as r:
        return json.loads(r.read())


def handler(event, context):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    try:
        code = json.loads(body)["code"]
    except (ValueError, KeyError, TypeError):
        return error(400, "invalid_request", "body must be JSON with a string code")
    if not isinstance(code, str) or not code:
        return error(400, "invalid_request", "code must be a non-empty string")

    wx = jscode2session(code)
    if wx.get("errcode"):
        if wx["errcode"] in (40029, 40163):
            return error(400, "invalid_code", "the login code is invalid or already used")
        return error(502, "wechat_error", wx.get("errmsg", "WeChat error"))

    now = int(time.time())
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    key = hashlib.sha256(token.encode()).hexdigest()
    item = {
        "pk": {"S": f"session#{key}"},
        "openid": {"S": wx["openid"]},
        "session_key": {"S": wx["session_key"]},
        "created_at": {"N": str(now)},
        "expires_at": {"N": str(now + SESSION_TTL)},
    }
    if wx.get("unionid"):
        item["unionid"] = {"S": wx["unionid"]}
    dynamodb.put_item(TableName=TABLE, Item=item)

    expr = "SET last_login = :now, first_seen = if_not_exists(first_seen, :now)"
    values = {":now": {"N": str(now)}}
    if wx.get("unionid"):
        expr += ", unionid = :u"
        values[":u"] = {"S": wx["unionid"]}
    old = dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"user#{wx['openid']}"}},
        UpdateExpression=expr,
        ExpressionAttributeValues=values,
        ReturnValues="ALL_OLD",
    ).get("Attributes", {})

    return answer(
        200,
        {
            "token": token,
            "expires_at": now + SESSION_TTL,
            "openid": wx["openid"],
            "unionid": wx.get("unionid"),
            "new_user": "first_seen" not in old,
        },
    )
