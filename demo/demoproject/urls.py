"""URLs of the demo: the shop page at ``/``, the admin at ``/admin/``, metrics at ``/metrics``."""

from django.contrib import admin
from django.urls import path
from shop import views

import taskkit.observe.views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("metrics", taskkit.observe.views.metrics),
]
