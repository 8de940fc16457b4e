"""The course website (Sphinx + myst-nb) and the launch links (Colab, Binder).

``python -m docs.site.build --mode fast|release`` builds the site; ``python -m docs.site.launch``
writes the Colab setup cell into every notebook and the launch badges into the README.
"""
