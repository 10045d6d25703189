from django.contrib import admin
from django.http import HttpResponse
from django.urls import path

import taskkit.observe.views
from tests.testapp import tasks


def dispatch_view(request):
    """Dispatches one run, as a project's view would."""
    return HttpResponse(tasks.parked.delay("from-a-view").id)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", taskkit.observe.views.metrics),
    path("dispatch", dispatch_view),
]
