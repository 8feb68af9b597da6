"""The drivers: compiled programs, fit/evaluate/predict around them, callbacks.

Read after :mod:`jaxdl.state` and :mod:`jaxdl.step`: :mod:`jaxdl.train.programs`
compiles a model's steps once, :mod:`jaxdl.train.fit` runs them over the data.
"""
