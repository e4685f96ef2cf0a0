"""Stand-in module (openai_responses): see standin.py for the contract every module keeps."""


def matches(req):
    """Whether this module serves req (method and path)."""
    return False


def is_model_request(req):
    """Whether req asks the model for a turn (the requests that mode 'silent' never answers)."""
    return False


def handle(req, settings):
    """Answers req per settings.mode ('ok' or '401')."""
    req.send_json(501, {"error": {"message": "not written yet"}})
