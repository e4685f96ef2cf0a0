"""moto server as the tests use it: `moto_server`'s own app and request handler, threaded, with
one change: DynamoDB requests are handled one at a time.

Why: moto's DynamoDB evaluates a ConditionExpression and then writes, with no lock between the
two, so two concurrent conditional UpdateItems on one item can both succeed under the threaded
server. Real DynamoDB makes each conditional write atomic, and Outpost's claim (one conditional
UpdateItem) relies on exactly that; the contract case `claim_races_have_one_winner` sees the
difference. Serialising DynamoDB (only) restores the service's guarantee while SQS long polls,
S3 and SSM stay concurrent.

Usage: python3 scripts/moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


class SerialDynamoDB:
    """WSGI middleware: one DynamoDB request at a time (its whole response produced under the lock)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerialDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
