"""The web console (issue #5): pages at `/` and under /console, served by `tuneforge serve`.

routes.py holds the routes, forms.py the create-model form, queries.py what pages read,
session.py the signed session cookie and CSRF token, users.py console users and API-key sign-in;
templates/ and static/ ship in the package (no CDN, works offline)."""
