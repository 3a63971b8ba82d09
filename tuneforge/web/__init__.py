"""The web console (issue #5): pages at `/` and under /console, served by `tuneforge serve`.

routes.py holds the model pages (list, create, details, compare) and the page's JSON helpers,
cluster_pages.py the cluster pages, sweep_pages.py the sweep pages, try_it.py the "Try it" chat
panel's stream, signin.py sign-in and sign-out, deps.py what every route depends
on (the signed-in caller, CSRF); forms.py the create-model form, queries.py what pages read and how
they word it, session.py the session cookie and its server-side record, users.py console users and
API-key sign-in; templates/ and static/ ship in the package (no CDN, works offline). Everything goes
through tuneforge.services, never the HTTP routers.
"""
