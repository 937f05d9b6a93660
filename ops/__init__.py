"""Operator commands for a deployed (or ``make run``) kisi-gateway: ``python -m ops --help``.

Never imported by the Lambdas. AWS access goes through boto3's default session, so the usual
``AWS_PROFILE``/``AWS_REGION`` apply, and ``AWS_ENDPOINT_URL=http://127.0.0.1:5000`` points the
commands at ``make run``'s embedded AWS.
"""
