"""Online serving with Ray Serve: a FastAPI ingress (`SentimentAPI`) composed with a batched model
deployment (`SentimentModel`) through a DeploymentHandle. Importing this package starts nothing.

    mmsent serve --config mmsent/presets/serve/default.yaml        # or: serve run mmsent/presets/serve/default.yaml
    curl -s 127.0.0.1:8000/v1/sentiment -H 'content-type: application/json' -d '{"text": "I love it"}'

Modules: `app` (builder, args model, `mmsent serve`), `ingress` and `model` (the deployments),
`api` (routes, errors, limits), `inputs` (request -> posts -> model inputs), `schemas` (wire
models), `metrics`, `loopback` (local Serve listens on 127.0.0.1 only).
See docs/serving.md.
"""
