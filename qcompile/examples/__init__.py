"""Worked examples of user code: a model factory, a data factory and metric functions, as a user would write them
(recipes name them with ``root: pkg://qcompile/examples``). qcompile itself never imports them."""
