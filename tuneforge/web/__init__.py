"""The web console (issue #5): pages at `/` and under /console, served by `tuneforge serve`.

Every module that holds routes is named for the pages it serves (*_pages.py); every form is in forms.py.

  console.py        install(app): mounts the page modules and the redirect to sign-in; the static assets
  model_pages.py    the model pages (list, create, details, compare, the adapter's download) and the
                    JSON they poll and check with (progress, the plan, the dataset check)
  cluster_pages.py  the cluster pages (list, create, details, delete)
  sweep_pages.py    the sweep pages (list, create, details with its trials, cancel, learning curve, keep best)
  try_it_pages.py   the details page's "Try it" panel: the chat reply's stream
  signin_pages.py   sign-in and sign-out
  forms.py          the create-model, new-cluster and new-sweep forms: what was typed, checked field by
                    field, as the API's body, and the API's messages mapped back to their field
  deps.py           what every route depends on (the signed-in caller, CSRF)
  queries.py        what pages read and how they word it
  render.py         the templates, rendered with the session's CSRF token, and redirects
  session.py        the session cookie and its server-side record
  users.py          console users (passwords) and API-key sign-in (the one-time challenge)
  templates/, static/  shipped in the package (no CDN, works offline)

Everything goes through tuneforge.services, never the HTTP routers.
"""
