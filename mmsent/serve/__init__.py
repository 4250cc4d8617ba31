"""Online serving with Ray Serve: a FastAPI ingress (`SentimentAPI`) composed with a batched model
deployment (`SentimentModel`) through a DeploymentHandle. Importing this package starts nothing.

    mmsent serve --config mmsent/presets/serve/default.yaml        # or: serve run mmsent/presets/serve/default.yaml
    curl -s 127.0.0.1:8000/v1/sentiment -H 'content-type: application/json' -d '{"text": "I love it"}'

A request flows one way: `routes` (the FastAPI app; auth a dependency of every /v1 route, `auth`)
-> `parse` (body -> posts) -> `scoring` (`Scorer`: `media` fetched, the one Preprocessor, the
model handle; `health` caches its pings) -> `model` (`SentimentModel`). `errors` holds
`RequestError` and how every exception becomes a JSON answer. Also: `app` (builder, args model,
`mmsent serve`), `ingress` (the `SentimentAPI` deployment: builds the scorer and the app per
replica), `middleware` (body cap, metrics), `wire` (wire models), `metrics`, `loopback` (local
Serve listens on 127.0.0.1 only). See docs/serving.md.
"""
