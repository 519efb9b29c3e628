from django.urls import path

from changes.api import comments, views

urlpatterns = [
    path("targets/", views.TargetListView.as_view(), name="target-list"),
    path("targets/<str:ref>/", views.TargetDetailView.as_view(), name="target-detail"),
    path("targets/<str:ref>/live/", views.TargetLiveView.as_view(), name="target-live"),
    path("changes/", views.ChangeListView.as_view(), name="change-list"),
    path("changes/<int:pk>/", views.ChangeDetailView.as_view(), name="change-detail"),
    path("changes/<int:pk>/plan/", views.ChangePlanView.as_view(), name="change-plan"),
    path("changes/<int:pk>/submit/", views.ChangeSubmitView.as_view(), name="change-submit"),
    path("changes/<int:pk>/cancel/", views.ChangeCancelView.as_view(), name="change-cancel"),
    path("changes/<int:pk>/approve/", views.ChangeApproveView.as_view(), name="change-approve"),
    path("changes/<int:pk>/reject/", views.ChangeRejectView.as_view(), name="change-reject"),
    path("changes/<int:pk>/emergency/", views.ChangeEmergencyView.as_view(), name="change-emergency"),
    path("changes/<int:pk>/emergency-review/", views.ChangeEmergencyReviewView.as_view(),
         name="change-emergency-review"),
    path("changes/<int:pk>/rollback/", views.ChangeRollbackView.as_view(), name="change-rollback"),
    path("changes/<int:pk>/revert/", views.ChangeRevertView.as_view(), name="change-revert"),
    path("emergency-queue/", views.EmergencyQueueView.as_view(), name="emergency-queue"),
    path("changes/<int:pk>/comments/", comments.ChangeCommentListView.as_view(), name="change-comments"),
    path("changes/<int:pk>/evidence/", views.ChangeEvidenceView.as_view(), name="change-evidence"),
    path("audit/export/", views.AuditExportView.as_view(), name="audit-export"),
]
