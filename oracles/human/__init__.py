"""A person as the oracle (``--oracle human``): a local web page shows each round's queried images and
takes the labels while the study runs.

- ``oracle.py``: HumanOracle, the oracle the loop asks; it opens a batch, saves every answer in the run
  folder (``human_batch.json``) and waits until the batch is submitted.
- ``web.py``: the Flask application and the server thread (127.0.0.1, a random token, kept in the run
  folder's ``human_token`` for --resume).
- ``address.py``: where the page listens (no Flask: main.py checks the address before a run starts).
- ``templates/``: the page (server-rendered HTML with a little JavaScript, no build step).

Nothing is imported here: ``oracles.make_oracle`` imports ``oracle.py`` (and with it Flask) only when a
person labels.
"""
