"""Verifies one Herald callback with the official Standard Webhooks library.

Reads a JSON object from stdin: {"secret", "payload", "headers", "later_seconds"} and prints
"ok" or "rejected: <reason>". `later_seconds` replays the check that many seconds in the future
(to show that an old callback is refused).
"""
import json
import sys
from datetime import datetime, timedelta, timezone

import standardwebhooks.webhooks as sw

request = json.load(sys.stdin)
later = timedelta(seconds=request.get("later_seconds", 0))


class ShiftedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz=tz) + later


sw.datetime = ShiftedDatetime
try:
    sw.Webhook(request["secret"]).verify(request["payload"], request["headers"], json_parse=False)
    print("ok")
except sw.WebhookVerificationError as error:
    print(f"rejected: {error}")
