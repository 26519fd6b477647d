from fastapi import APIRouter

router = APIRouter(prefix="/v0/users", tags=["users"])
