"""``divcon serve``: divcon's pipelines behind an OpenAI-compatible HTTP endpoint, so an application keeps calling "a
model" while a small decomposer and a big solver answer behind it.

Modules: :mod:`.config` (the served-model table and limits, from YAML), :mod:`.schema` (the request fields read),
:mod:`.admission` (bounded work and queue), :mod:`.body_limit`, :mod:`.errors` (OpenAI-style errors),
:mod:`.response` (completion, extras, stream chunks), :mod:`.app` (the FastAPI app), :mod:`.cli` (the command).
Nothing here is imported by ``divcon --help``: FastAPI loads when the server starts.
"""
